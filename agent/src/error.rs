//! Errors that name the step and the resource; the exit code follows DESIGN.md.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input (tag, parameter, field): exit 2, nothing was changed.
    BadInput,
    /// Anything else: exit 1.
    Failed,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub step: &'static str,
    pub resource: String,
    pub detail: String,
}

impl Error {
    pub fn bad_input(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { kind: Kind::BadInput, step, resource: resource.into(), detail: detail.into() }
    }

    pub fn failed(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { kind: Kind::Failed, step, resource: resource.into(), detail: detail.into() }
    }

    /// An SDK error, printed with its whole chain of causes.
    pub fn sdk<E: std::error::Error>(step: &'static str, resource: impl Into<String>, err: &E) -> Self {
        Self::failed(step, resource, k3s_asg_aws::sdk_error_text(err))
    }

    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::BadInput => 2,
            Kind::Failed => 1,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
