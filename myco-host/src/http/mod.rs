//! The control-plane API's protocol layer: HTTP/1.1 requests in, responses out, over buffers the
//! daemon allocates once per connection. No sockets and no event loop live here; the daemon reads
//! bytes into a `RequestBuffer`, asks it for the next request, and writes the answer that
//! `response` builds. `docs/api.md` is the specification of the endpoints.
//!
//! Nothing in this module allocates, and no input (a client's bytes) can make it panic: malformed,
//! oversized or unknown requests become an `HttpError`, which maps to a 4xx or 5xx status and a JSON
//! error body.

pub mod json;
pub mod prometheus;
pub mod request;
pub mod response;
