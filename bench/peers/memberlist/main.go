// memberlist-bench: HashiCorp memberlist (DefaultLANConfig) with NODES nodes in one process on
// loopback, each bound to its own 127.NET.(i+1):7946, measured the way bench/peers/run.sh
// measures every system (run.sh installs the nftables loss and counts the bytes):
//
//	JOIN s=..    from the first node's start until every node lists every node alive
//	             (each joins node 0, as an operator's --join would)
//	KV s=..      node 0 sets a new key/value (its node metadata, spread by memberlist's
//	             gossip and push-pull) until every node sees it
//	REST begin / REST end  after SETTLE, REST seconds with nothing to spread (run.sh reads
//	             its counters)
//	DETECT s=..  the last node shuts down without leaving; until every live node lists it dead
//	FALSE n=..   members other than the killed one that some node declared dead (counted per
//	             declaring node) over the whole run
//
// Built offline in GOPATH mode against Debian's golang-github-hashicorp-memberlist-dev.
package main

import (
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// meta is the key/value: node metadata, which memberlist carries in its alive messages.
type meta struct {
	mu    sync.Mutex
	value []byte
}

func (m *meta) NodeMeta(limit int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.value
}
func (m *meta) NotifyMsg([]byte)                           {}
func (m *meta) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (m *meta) LocalState(join bool) []byte                { return nil }
func (m *meta) MergeRemoteState(buf []byte, join bool)     {}

// events counts deaths: a member other than `killed` declared dead is a false one.
type events struct {
	killed *atomic.Value
	wrong  *int64
}

func (e events) NotifyJoin(*memberlist.Node)   {}
func (e events) NotifyUpdate(*memberlist.Node) {}
func (e events) NotifyLeave(n *memberlist.Node) {
	if k, _ := e.killed.Load().(string); k != n.Name {
		atomic.AddInt64(e.wrong, 1)
	}
}

// waitUntil polls ok every 20 ms for at most limit; the seconds since start when it held.
func waitUntil(start time.Time, limit time.Duration, ok func() bool) string {
	for time.Since(start) < limit {
		if ok() {
			return fmt.Sprintf("%.2f", time.Since(start).Seconds())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "-"
}

func main() {
	net := flag.String("net", "127.201.1", "the first three octets of the nodes' addresses")
	nodes := flag.Int("nodes", 50, "nodes")
	settle := flag.Duration("settle", 10*time.Second, "how long to wait before the window at rest")
	rest := flag.Duration("rest", 20*time.Second, "the window at rest")
	limit := flag.Duration("limit", 120*time.Second, "the longest wait for each figure")
	flag.Parse()

	var killed atomic.Value
	killed.Store("")
	var falseDead int64
	metas := make([]*meta, *nodes)
	list := make([]*memberlist.Memberlist, *nodes)
	start := time.Now()
	for i := 0; i < *nodes; i++ {
		c := memberlist.DefaultLANConfig()
		c.Name = fmt.Sprintf("n%d", i)
		c.BindAddr = fmt.Sprintf("%s.%d", *net, i+1)
		c.AdvertiseAddr = c.BindAddr
		c.LogOutput = ioutil.Discard
		metas[i] = &meta{}
		c.Delegate = metas[i]
		c.Events = events{&killed, &falseDead}
		m, err := memberlist.Create(c)
		if err != nil {
			fmt.Fprintln(os.Stderr, "memberlist-bench:", err)
			os.Exit(1)
		}
		list[i] = m
		if i > 0 {
			// A failed join is retried by nobody, as with a daemon started before its seed.
			_, _ = m.Join([]string{fmt.Sprintf("%s.1:7946", *net)})
		}
	}
	all := func(ok func(m *memberlist.Memberlist) bool, ms []*memberlist.Memberlist) func() bool {
		return func() bool {
			for _, m := range ms {
				if !ok(m) {
					return false
				}
			}
			return true
		}
	}
	joined := waitUntil(start, *limit, all(func(m *memberlist.Memberlist) bool { return m.NumMembers() == *nodes }, list))
	fmt.Printf("JOIN s=%s\n", joined)

	metas[0].mu.Lock()
	metas[0].value = []byte("key=value")
	metas[0].mu.Unlock()
	sees := func(m *memberlist.Memberlist) bool {
		for _, n := range m.Members() {
			if n.Name == "n0" && string(n.Meta) == "key=value" {
				return true
			}
		}
		return false
	}
	kvStart := time.Now()
	_ = list[0].UpdateNode(*limit)
	kv := waitUntil(kvStart, *limit, all(sees, list))
	fmt.Printf("KV s=%s\n", kv)

	time.Sleep(*settle)
	fmt.Println("REST begin")
	time.Sleep(*rest)
	fmt.Println("REST end")

	last := *nodes - 1
	killed.Store(fmt.Sprintf("n%d", last))
	_ = list[last].Shutdown()
	killedAt := time.Now()
	live := list[:last]
	gone := func(m *memberlist.Memberlist) bool {
		for _, n := range m.Members() {
			if n.Name == fmt.Sprintf("n%d", last) {
				return false
			}
		}
		return true
	}
	fmt.Printf("DETECT s=%s\n", waitUntil(killedAt, *limit, all(gone, live)))
	fmt.Printf("FALSE n=%d\n", atomic.LoadInt64(&falseDead))
	for _, m := range live {
		_ = m.Shutdown()
	}
}
