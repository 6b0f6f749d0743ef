//! The one error type of both programs: it names the step and the resource
//! (instance id, ARN, record, parameter, path), and its kind sets the exit code
//! of DESIGN.md: 2 for bad input (nothing was changed), 1 for anything else.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    /// Bad input (tag, parameter, field): exit 2.
    pub bad_input: bool,
    /// Worth trying again at once (a concurrent writer took a rule priority).
    pub retry: bool,
    pub step: &'static str,
    pub resource: String,
    pub detail: String,
}

impl Error {
    pub fn failed(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { bad_input: false, retry: false, step, resource: resource.into(), detail: detail.into() }
    }

    pub fn bad_input(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { bad_input: true, ..Self::failed(step, resource, detail) }
    }

    /// An SDK error, printed with its whole chain of causes.
    #[cfg(feature = "sdk")]
    pub fn sdk<E: std::error::Error>(step: &'static str, resource: impl Into<String>, err: &E) -> Self {
        Self::failed(step, resource, crate::sdk_error_text(err))
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.resource.is_empty() {
            write!(f, "{}: {}", self.step, self.detail)
        } else {
            write!(f, "{} ({}): {}", self.step, self.resource, self.detail)
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_text() {
        let e = Error::bad_input("read instance tags", "i-0123 tag \"Role\"", "the tag is missing");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "read instance tags (i-0123 tag \"Role\"): the tag is missing");
        let e = Error::failed("install SIGTERM handler", "", "no");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "install SIGTERM handler: no");
    }
}
