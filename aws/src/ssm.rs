//! SSM Parameter Store, spoken to in this one place of the workspace: the
//! agent's reads and writes ([`Parameters`]: token, kubeconfigs, elections) and
//! the coordinator's reads ([`SpecParameters`]: the operator's specs, and a
//! cluster's admin kubeconfig for the operator), both on one client ([`Ssm`]).

use crate::error::Error;
use crate::secret::Secret;
use async_trait::async_trait;
use aws_sdk_ssm::types::ParameterType;
use std::collections::BTreeMap;

type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Param {
    pub value: Secret,
    pub secure: bool,
    /// When it was last written (SSM's clock), where SSM says.
    pub modified: Option<std::time::SystemTime>,
}

#[async_trait]
pub trait Parameters: Send + Sync {
    /// Reads (decrypting) the named parameters in one call; absent ones are left out.
    async fn get(&self, names: &[String]) -> Result<BTreeMap<String, Param>>;
    /// Creates a SecureString with `Overwrite=false`; `false` when it already existed.
    async fn create_secure(&self, name: &str, value: &Secret) -> Result<bool>;
    /// Overwrites an existing SecureString.
    async fn overwrite_secure(&self, name: &str, value: &Secret) -> Result<()>;
    /// Every String parameter directly under `path` (not secrets): name, value, and when it
    /// was last written (SSM's clock).
    async fn list(&self, path: &str) -> Result<Vec<Listed>>;
    /// Creates a String with `Overwrite=false`; `false` when it already existed.
    async fn create_string(&self, name: &str, value: &str) -> Result<bool>;
    /// Overwrites a String.
    async fn overwrite_string(&self, name: &str, value: &str) -> Result<()>;
}

/// A plain parameter as listed by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub value: String,
    pub last_modified: Option<std::time::SystemTime>,
}

/// The coordinator's reads: the region spec, the cluster and endpoint specs under a path, and
/// (for the operator, at the command line) a cluster's admin kubeconfig.
#[async_trait]
pub trait SpecParameters: Send + Sync {
    /// The value of the region spec parameter `name`; bad input when it does not exist.
    async fn region_spec(&self, name: &str) -> Result<String>;
    /// Every parameter under `path`, recursively and not decrypted: name → value.
    async fn specs_under(&self, path: &str) -> Result<BTreeMap<String, String>>;
    /// The admin kubeconfig parameter `name`, decrypted; bad input when it does not exist.
    async fn admin_kubeconfig(&self, name: &str) -> Result<Secret>;
}

/// The real SSM client of both programs.
pub struct Ssm(pub aws_sdk_ssm::Client);

impl Ssm {
    pub fn new(sdk: &aws_config::SdkConfig) -> Ssm {
        Ssm(aws_sdk_ssm::Client::new(sdk))
    }
}

#[async_trait]
impl Parameters for Ssm {
    async fn get(&self, names: &[String]) -> Result<BTreeMap<String, Param>> {
        let mut out = BTreeMap::new();
        for chunk in names.chunks(10) {
            let resp = self.0.get_parameters().set_names(Some(chunk.to_vec())).with_decryption(true).send().await.map_err(|e| {
                use aws_sdk_ssm::error::ProvideErrorMetadata;
                match e.code() {
                    // Not transient: the role may not read them, or their KMS key may not decrypt them.
                    Some(code @ ("AccessDeniedException" | "InvalidKeyId")) => Error::bad_input(
                        "read parameters (ssm:GetParameters)",
                        chunk.join(","),
                        format!(
                            "{code}: {}; the instance role needs ssm:GetParameters on these parameters and kms:Decrypt on their key",
                            e.message().unwrap_or("no message")
                        ),
                    ),
                    _ => Error::sdk("read parameters (ssm:GetParameters)", chunk.join(","), e),
                }
            })?;
            for p in resp.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    let secure = p.r#type() == Some(&ParameterType::SecureString);
                    let modified = p.last_modified_date().and_then(|d| std::time::SystemTime::try_from(*d).ok());
                    out.insert(name.to_string(), Param { value: Secret::new(value), secure, modified });
                }
            }
        }
        Ok(out)
    }

    async fn create_secure(&self, name: &str, value: &Secret) -> Result<bool> {
        let res = self.0.put_parameter().name(name).value(value.expose()).r#type(ParameterType::SecureString).overwrite(false).send().await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_already_exists()) => Ok(false),
            Err(e) => Err(Error::sdk("create parameter (ssm:PutParameter)", name, e)),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut pages = self.0.get_parameters_by_path().path(path).recursive(false).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("list parameters (ssm:GetParametersByPath)", path, e))?;
            for p in page.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    let last_modified = p.last_modified_date().and_then(|d| std::time::SystemTime::try_from(*d).ok());
                    out.push(Listed { name: name.to_string(), value: value.to_string(), last_modified });
                }
            }
        }
        Ok(out)
    }

    async fn create_string(&self, name: &str, value: &str) -> Result<bool> {
        match self.0.put_parameter().name(name).value(value).r#type(ParameterType::String).overwrite(false).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_already_exists()) => Ok(false),
            Err(e) => Err(Error::sdk("create parameter (ssm:PutParameter)", name, e)),
        }
    }

    async fn overwrite_string(&self, name: &str, value: &str) -> Result<()> {
        self.0
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| Error::sdk("update parameter (ssm:PutParameter)", name, e))?;
        Ok(())
    }

    async fn overwrite_secure(&self, name: &str, value: &Secret) -> Result<()> {
        self.0
            .put_parameter()
            .name(name)
            .value(value.expose())
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| Error::sdk("update parameter (ssm:PutParameter)", name, e))?;
        Ok(())
    }
}

#[async_trait]
impl SpecParameters for Ssm {
    async fn region_spec(&self, name: &str) -> Result<String> {
        Ok(self
            .0
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_parameter_not_found() => Error::bad_input("read region spec", name, "the parameter does not exist"),
                _ => Error::sdk("read region spec (ssm:GetParameter)", name, e),
            })?
            .parameter()
            .and_then(|p| p.value())
            .unwrap_or_default()
            .to_string())
    }

    async fn specs_under(&self, path: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut pages = self.0.get_parameters_by_path().path(path).recursive(true).with_decryption(false).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("read specs (ssm:GetParametersByPath)", path, e))?;
            for p in page.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    out.insert(n.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn admin_kubeconfig(&self, name: &str) -> Result<Secret> {
        let resp = self.0.get_parameter().name(name).with_decryption(true).send().await.map_err(|e| match e.as_service_error() {
            Some(s) if s.is_parameter_not_found() => {
                Error::bad_input("read kubeconfig", name, "the parameter does not exist (has a control-plane instance of this cluster joined?)")
            }
            _ => Error::sdk("read kubeconfig (ssm:GetParameter)", name, e),
        })?;
        Ok(Secret::new(resp.parameter().and_then(|p| p.value()).unwrap_or_default()))
    }
}
