//! Choosing the compute device explicitly. burn's `Device::default()` picks a GPU backend
//! whenever one is compiled in, even on a machine without a GPU, so kiln never uses it.

use burn::prelude::*;

use crate::error::{ModelError, Result};

/// Parses a device name: `flex` (alias `cpu`), `wgpu` (needs the `wgpu` feature) or `cuda:N`
/// (needs the `cuda` feature).
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    let unavailable = |feature: &str| {
        ModelError::Device(
            name.to_string(),
            format!(
                "this kiln was built without the `{feature}` feature (cargo build --features {feature})"
            ),
        )
    };
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
            #[cfg(not(feature = "wgpu"))]
            Err(unavailable("wgpu"))
        }
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let index: usize = match name.strip_prefix("cuda:") {
                None => 0,
                Some(i) => i.parse().map_err(|_| {
                    ModelError::Device(
                        name.to_string(),
                        "expected cuda:N with N a GPU index".into(),
                    )
                })?,
            };
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(index));
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                Err(unavailable("cuda"))
            }
        }
        _ => Err(ModelError::Device(
            name.to_string(),
            "unknown device (expected flex, cpu, wgpu or cuda:N)".into(),
        )),
    }
}
