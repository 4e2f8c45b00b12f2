use super::*;

const HASH: &[u8] = b"3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj";

fn get(target: &str) -> Parse {
    let mut buf = [0u8; 512];
    let head = b"GET ";
    let tail = b" HTTP/1.1\r\nHost: x\r\n\r\n";
    let t = target.as_bytes();
    buf[..4].copy_from_slice(head);
    buf[4..4 + t.len()].copy_from_slice(t);
    buf[4 + t.len()..4 + t.len() + tail.len()].copy_from_slice(tail);
    parse_request(&buf[..4 + t.len() + tail.len()])
}

fn route_of(p: Parse) -> Result<Route, Refusal> {
    match p {
        Parse::Complete(r) => Ok(r.route),
        Parse::Refused(r) => Err(r),
        Parse::Incomplete => panic!("incomplete"),
    }
}

#[test]
fn routes_the_three_cache_paths() {
    let hash: StoreHash = HASH.try_into().unwrap();
    assert_eq!(route_of(get("/nix-cache-info")), Ok(Route::CacheInfo));
    let narinfo = "/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj.narinfo";
    assert_eq!(route_of(get(narinfo)), Ok(Route::NarInfo(hash)));
    let nar = "/nar/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj.nar";
    assert_eq!(route_of(get(nar)), Ok(Route::Nar(hash)));
}

#[test]
fn refuses_traversal_odd_targets_and_unknown_paths() {
    for bad in [
        "/../etc/passwd",
        "/nar/../../etc/passwd",
        "//etc/passwd",
        "/nix-cache-info?x=1",
        "/%2e%2e/etc",
        "relative",
        "/nar\\x.nar",
    ] {
        assert_eq!(route_of(get(bad)), Err(Refusal::BadRequest), "{bad}");
    }
    for unknown in [
        "/",
        "/etc/passwd",
        "/3pfgh1bvpzwp75ng9cpdyqyqv7afi7n.narinfo",
        "/3pfgh1bvpzwp75ng9cpdyqyqv7afi7ne.narinfo",
        "/nar/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj.nar.xz",
    ] {
        assert_eq!(route_of(get(unknown)), Err(Refusal::NotFound), "{unknown}");
    }
}

#[test]
fn methods_versions_keep_alive_and_long_heads() {
    let post = b"POST /nix-cache-info HTTP/1.1\r\n\r\n";
    assert_eq!(
        parse_request(post),
        Parse::Refused(Refusal::MethodNotAllowed)
    );
    let head_nar = b"HEAD /nar/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj.nar HTTP/1.1\r\n\r\n";
    assert_eq!(
        parse_request(head_nar),
        Parse::Refused(Refusal::MethodNotAllowed)
    );
    let v2 = b"GET /nix-cache-info HTTP/2.0\r\n\r\n";
    assert_eq!(parse_request(v2), Parse::Refused(Refusal::Version));
    let head = b"HEAD /3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj.narinfo HTTP/1.1\r\n\r\n";
    let Parse::Complete(r) = parse_request(head) else {
        panic!("HEAD of a narinfo is fine");
    };
    assert!(r.head_only && r.keep_alive);
    assert_eq!(r.consumed, head.len());
    let close = b"GET /nix-cache-info HTTP/1.1\r\nConnection: Close\r\n\r\nGET";
    let Parse::Complete(r) = parse_request(close) else {
        panic!("complete");
    };
    assert!(!r.keep_alive);
    assert_eq!(r.consumed, close.len() - 3);
    let old = b"GET /nix-cache-info HTTP/1.0\r\n\r\n";
    assert!(matches!(parse_request(old), Parse::Complete(r) if !r.keep_alive));
    assert_eq!(
        parse_request(b"GET /nix-cache-info HTTP/1.1\r\n"),
        Parse::Incomplete
    );
    let long = [b'a'; REQUEST_HEAD_BYTES_MAX];
    assert_eq!(parse_request(&long), Parse::Refused(Refusal::HeadTooLarge));
    assert_eq!(parse_request(&long[..100]), Parse::Incomplete);
}

#[test]
fn the_bucket_holds_its_rate_over_time() {
    let rate = 1_000_000;
    let mut b = TokenBucket::new(rate, 0);
    // Ten seconds of a client that always wants 64 KiB, asking every 7 ms.
    let mut sent = 0u64;
    let mut now = 0;
    while now <= 10_000 {
        sent += b.take(now, 65_536) as u64;
        now += 7;
    }
    // The first tenth of a second's burst, then exactly the rate.
    let expected = rate * 10 + rate / 10;
    assert!(sent <= expected, "{sent} > {expected}");
    assert!(sent >= expected - 65_536, "{sent}");
}

#[test]
fn the_bucket_is_shared_and_gives_back_what_was_not_sent() {
    let mut b = TokenBucket::new(10_000, 0);
    assert_eq!(b.take(0, 600), 600);
    assert_eq!(b.take(0, 600), 400, "a tenth of a second's worth at once");
    assert_eq!(b.take(0, 1), 0);
    b.give_back(300);
    assert_eq!(b.available(0), 300);
    assert_eq!(b.take(50, 10_000), 800, "50 ms adds 500 bytes");
    assert_eq!(b.available(10_000), 1000, "never more than the burst");
    let mut free = TokenBucket::new(0, 0);
    assert_eq!(free.take(0, usize::MAX), usize::MAX);
    // Time going backwards (a caller's bug) adds nothing.
    let mut b = TokenBucket::new(10_000, 100);
    b.take(100, 1000);
    assert_eq!(b.available(50), 0);
}

#[test]
fn the_bucket_splits_evenly_between_clients() {
    let mut b = TokenBucket::new(10_000, 0);
    assert_eq!(b.share(0, 1), 1000, "one client may take it all");
    assert_eq!(b.share(0, 3), 333);
    assert_eq!(b.share(0, 0), 1000, "no client is one");
    // Two clients served in turn, each at most its share: each gets half.
    let (mut first, mut second) = (0, 0);
    for now in (0..10_000).step_by(50) {
        let share = b.share(now, 2);
        first += b.take(now, share.min(65_536));
        second += b.take(now, share.min(65_536));
    }
    assert_eq!(first, second);
    assert!(first + second <= 10_000 * 10 + 1000, "{first} + {second}");
    let mut free = TokenBucket::new(0, 0);
    assert_eq!(free.share(0, 2), usize::MAX / 2);
}

#[test]
fn nix32_and_base64_match_nix_and_rfc4648() {
    let hex = b"c9aa43bd203d5430a86579bc973feb942768bc0c15bc1698f94f8c097d5d2bbf";
    let bytes = crate::hex::parse_hex32(hex).unwrap();
    let mut out = [0u8; 52];
    // As `nix-store -q --hash` prints the same path's hash.
    assert_eq!(
        nix32(&bytes, &mut out),
        "1grbbmyhk32gz6c1dg0m1jy6h9wlxczrgg3rcnl30m1x42yl7an9"
    );
    let mut out = [0u8; 8];
    assert_eq!(base64(b"foob", &mut out), "Zm9vYg==");
    assert_eq!(base64(b"foo", &mut out), "Zm9v");
    assert_eq!(base64(b"fo", &mut out), "Zm8=");
}

const DUMP: &[u8] = b"/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello\n\
c9aa43bd203d5430a86579bc973feb942768bc0c15bc1698f94f8c097d5d2bbf\n\
464\n\
/nix/store/zljvyi7247b5500b06mrcdafpj63m811-hello.drv\n\
2\n\
/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello\n\
/nix/store/1z74b6lybsvj5dg2fghbfzvcbmgm26h1-glibc\n";

#[test]
fn a_registration_reads_whole_or_not_at_all() {
    let r = parse_registration(DUMP).unwrap();
    assert_eq!(r.path, b"/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello");
    assert_eq!(r.nar_size, 464);
    assert_eq!(r.references().count(), 2);
    for cut in 0..DUMP.len() - 1 {
        assert_eq!(parse_registration(&DUMP[..cut]), None, "cut at {cut}");
    }
    let no_refs = b"/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-a\n\
c9aa43bd203d5430a86579bc973feb942768bc0c15bc1698f94f8c097d5d2bbf\n1\n\n0\n";
    let r = parse_registration(no_refs).unwrap();
    assert_eq!((r.references().count(), r.deriver), (0, &b""[..]));
    let facts = NarInfoFacts {
        registration: r,
        key_name: b"k",
        signature: &[0; 64],
    };
    let mut out = [0u8; 1024];
    let n = write_narinfo(&facts, &mut out).unwrap();
    assert!(core::str::from_utf8(&out[..n])
        .unwrap()
        .contains("\nReferences: \nSig: k:"));
    let traversal = b"/nix/store/../../etc/passwd\n";
    assert_eq!(parse_registration(traversal), None);
}

#[test]
fn the_narinfo_and_fingerprint_are_nix_s() {
    let r = parse_registration(DUMP).unwrap();
    let mut fp = [0u8; 512];
    let n = write_fingerprint(&r, &mut fp).unwrap();
    let expected: &[u8] = b"1;/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello;\
sha256:1grbbmyhk32gz6c1dg0m1jy6h9wlxczrgg3rcnl30m1x42yl7an9;464;\
/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello,/nix/store/1z74b6lybsvj5dg2fghbfzvcbmgm26h1-glibc";
    assert_eq!(&fp[..n], expected);
    let facts = NarInfoFacts {
        registration: r,
        key_name: b"0123456789abcdef",
        signature: &[0; 64],
    };
    let mut out = [0u8; 1024];
    let n = write_narinfo(&facts, &mut out).unwrap();
    let text = core::str::from_utf8(&out[..n]).unwrap();
    assert!(text.starts_with("StorePath: /nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello\n"));
    assert!(text.contains("\nURL: nar/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj.nar\n"));
    assert!(text.contains(
        "\nReferences: 3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello 1z74b6lybsvj5dg2fghbfzvcbmgm26h1-glibc\n"
    ));
    assert!(text.contains("\nDeriver: zljvyi7247b5500b06mrcdafpj63m811-hello.drv\n"));
    assert!(text.ends_with("\nSig: 0123456789abcdef:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"));
    assert_eq!(write_narinfo(&facts, &mut out[..100]), None);
    assert_eq!(write_fingerprint(&r, &mut fp[..100]), None);
}

#[test]
fn only_paths_of_the_table_are_found_and_a_cut_table_keeps_whole_records() {
    let mut table = DUMP.to_vec();
    let second = b"/nix/store/1z74b6lybsvj5dg2fghbfzvcbmgm26h1-glibc\n\
c9aa43bd203d5430a86579bc973feb942768bc0c15bc1698f94f8c097d5d2bbf\n7\n\n0\n";
    table.extend_from_slice(second);
    let hash: StoreHash = *b"1z74b6lybsvj5dg2fghbfzvcbmgm26h1";
    let found = find_registration(&table, &hash).unwrap();
    assert_eq!(found.nar_size, 7);
    let first: StoreHash = HASH.try_into().unwrap();
    assert_eq!(find_registration(&table, &first).unwrap().nar_size, 464);
    let other: StoreHash = *b"0000000000000000000000000000000a";
    assert_eq!(find_registration(&table, &other), None);
    assert_eq!(whole_registrations(&table), (2, table.len()));
    let cut = &table[..table.len() - 3];
    assert_eq!(whole_registrations(cut), (1, DUMP.len()));
    assert_eq!(find_registration(cut, &hash), None);
}

#[test]
fn a_miss_while_the_table_is_read_again_is_retried_not_remembered() {
    assert_eq!(Refusal::miss(false).status(), 404);
    let refreshing = Refusal::miss(true);
    assert_eq!(refreshing.status(), 503);
    assert!(refreshing.message().starts_with("refreshing"));
}

#[test]
fn a_failed_closure_query_is_retried_within_nix_retries_then_less_often() {
    assert_eq!(closure_retry_ms(1), 1_000);
    assert_eq!(closure_retry_ms(2), 2_000);
    assert_eq!(closure_retry_ms(3), 4_000);
    assert_eq!(closure_retry_ms(7), 60_000);
    assert_eq!(closure_retry_ms(u32::MAX), 60_000);
    assert_eq!(closure_retry_ms(0), 1_000);
    // The offer stands through the first two failures, a second or three.
    assert!(!withdraws_offer(1) && !withdraws_offer(2));
    assert!(withdraws_offer(3) && withdraws_offer(u32::MAX));
}
