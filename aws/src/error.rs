//! The one error type of both programs: it names the step and the resource
//! (instance id, ARN, record, parameter, path), keeps the underlying error as
//! its source, and its kind sets the exit code of DESIGN.md: 2 for bad input
//! (nothing was changed), 1 for anything else. Whether it is worth retrying at
//! once is decided where it is made ([`Error::retry_if`]).

use std::fmt;

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub struct Error {
    /// Bad input (tag, parameter, field): exit 2.
    pub bad_input: bool,
    /// Worth trying again at once (a concurrent writer took a rule priority).
    pub retry: bool,
    /// AWS was busy or out of reach (throttling, a 5xx, a timeout, a dropped connection) after
    /// the SDK's own retries: worth waiting for and trying again, within the caller's deadline.
    pub transient: bool,
    pub step: &'static str,
    pub resource: String,
    pub detail: String,
    source: Option<Cause>,
}

impl Error {
    pub fn failed(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { bad_input: false, retry: false, transient: false, step, resource: resource.into(), detail: detail.into(), source: None }
    }

    pub fn bad_input(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { bad_input: true, ..Self::failed(step, resource, detail) }
    }

    /// An SDK (or any other library) error: printed with its whole chain of causes, and
    /// kept as the source.
    #[cfg(feature = "sdk")]
    pub fn sdk<E: std::error::Error + Send + Sync + 'static>(step: &'static str, resource: impl Into<String>, err: E) -> Self {
        let text = crate::sdk_error_text(&err);
        let transient = is_transient(&err.to_string(), &text);
        Error { transient, ..Self::failed(step, resource, text).caused_by(err) }
    }

    /// A failure with an underlying error (I/O, a spawned program): its text is the detail, and it
    /// is kept as the source.
    pub fn from_cause<E: std::error::Error + Send + Sync + 'static>(step: &'static str, resource: impl Into<String>, err: E) -> Self {
        Self::failed(step, resource, err.to_string()).caused_by(err)
    }

    /// Keeps `cause` as this error's source.
    pub fn caused_by<E: std::error::Error + Send + Sync + 'static>(mut self, cause: E) -> Self {
        self.source = Some(Box::new(cause));
        self
    }

    /// Marks the error worth an immediate retry when `cond` holds (decided where it is made).
    pub fn retry_if(mut self, cond: bool) -> Self {
        self.retry = cond;
        self
    }

    /// A spec that does not parse: bad input naming the parameter and the field.
    pub fn spec(e: crate::spec::SpecError) -> Self {
        Self::bad_input("read spec", e.parameter, format!("field `{}`: {}", e.field, e.problem))
    }

    pub fn exit_code(&self) -> u8 {
        if self.bad_input {
            2
        } else {
            1
        }
    }
}

/// Whether an SDK error (its own text, and the text with its causes) says AWS was busy or out of
/// reach rather than that the request was wrong: the SDK's dispatch, timeout and response
/// failures, throttling, and server-side errors.
pub fn is_transient(top: &str, full: &str) -> bool {
    // A refusal is never worth waiting for, whatever else the text holds.
    const REFUSALS: [&str; 4] = ["AccessDenied", "UnauthorizedOperation", "not authorized", "StatusCode(403)"];
    if REFUSALS.iter().any(|r| full.contains(r)) {
        return false;
    }
    // An answer the SDK could not read is transient only when it was a server error.
    if top.starts_with("response error") {
        return full.contains("StatusCode(5");
    }
    const FAILURES: [&str; 2] = ["dispatch failure", "request has timed out"];
    const CODES: [&str; 12] = [
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "PriorRequestNotComplete",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "Rate exceeded",
    ];
    FAILURES.iter().any(|f| top.starts_with(f)) || CODES.iter().any(|c| full.contains(c))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.resource.is_empty() {
            write!(f, "{}: {}", self.step, self.detail)
        } else {
            write!(f, "{} ({}): {}", self.step, self.resource, self.detail)
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn exit_codes_and_text() {
        let e = Error::bad_input("read instance tags", "i-0123 tag \"Role\"", "the tag is missing");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "read instance tags (i-0123 tag \"Role\"): the tag is missing");
        let e = Error::failed("install SIGTERM handler", "", "no");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "install SIGTERM handler: no");
        assert!(!e.retry);
    }

    #[test]
    fn transient_failures_are_told_from_wrong_requests() {
        assert!(is_transient("service error", "service error: unhandled error (ThrottlingException): Rate exceeded"));
        assert!(is_transient("service error", "service error: RequestLimitExceeded: Request limit exceeded."));
        assert!(is_transient("dispatch failure", "dispatch failure: io error: connection reset"));
        assert!(is_transient("request has timed out", "request has timed out"));
        assert!(!is_transient("service error", "service error: AccessDeniedException: not authorized"));
        assert!(!is_transient("service error", "service error: ParameterNotFound"));
        // moto answers an IAM refusal in XML to a JSON protocol: unreadable, but a refusal.
        assert!(!is_transient(
            "response error",
            "response error: malformed JSON error body (raw: Response { status: StatusCode(403) } AccessDenied)"
        ));
        assert!(is_transient("response error", "response error: malformed body (raw: Response { status: StatusCode(502) })"));
    }

    #[test]
    fn keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::failed("write file", "/etc/x", "denied").caused_by(io).retry_if(true);
        assert!(e.retry);
        let cause = e.source().expect("source kept");
        assert_eq!(cause.downcast_ref::<std::io::Error>().map(|io| io.kind()), Some(std::io::ErrorKind::PermissionDenied));
        assert_eq!(e.to_string(), "write file (/etc/x): denied");
    }
}
