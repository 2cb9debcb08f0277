//! The OAuth 2.0 client-credentials exchange (RFC 6749 §4.4): building the request (`request`),
//! signing client assertions (`assertion`), reading the response (`response`), peeking at JWT
//! claims (`jwt`), finding endpoints from an issuer (`discovery`), checking tokens against the
//! issuer's keys (`validate`), and HTTP (`client`). `request`, `response` and `jwt`, and the
//! parsing and checking halves of `discovery` and `validate`, are free of I/O and tested with
//! plain values.

pub mod assertion;
pub mod client;
pub mod discovery;
pub mod jwt;
pub mod request;
pub mod response;
pub mod validate;

pub use client::{ClientSettings, FetchError, HttpClient, HttpClients};
pub use request::TokenRequest;
pub use response::{ErrorClass, IssuedToken, ResponseError};
