//! ndctl's JSON listings, read into typed values, and the few ndctl actions bring-up needs.
//!
//! `ndctl list` prints a bare object, a bare array or a `{"dimms":…,"regions":…}` object
//! depending on how many kinds of device it found; [`Listing::parse`] accepts every form.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::command::{self, CmdOutput};

pub const NDCTL: &str = "ndctl";

/// A size as ndctl prints it: bytes, or a human string (`create-namespace` defaults to that).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Human(String),
}

impl Size {
    pub fn bytes(&self) -> Option<u64> {
        match self {
            Size::Bytes(b) => Some(*b),
            Size::Human(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Dimm {
    pub dev: String,
    #[serde(default)]
    pub id: Option<String>,
    /// Present (as "disabled") only when the DIMM is not enabled.
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Mapping {
    pub dimm: String,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub length: Option<u64>,
    #[serde(default)]
    pub position: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DaxDevice {
    pub chardev: String,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub align: Option<u64>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DaxRegion {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub align: Option<u64>,
    #[serde(default)]
    pub devices: Vec<DaxDevice>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Namespace {
    pub dev: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub align: Option<u64>,
    #[serde(default)]
    pub blockdev: Option<String>,
    /// devdax without `-X`: the first device's name, e.g. `dax1.0`.
    #[serde(default)]
    pub chardev: Option<String>,
    /// devdax with `-X` (and in `create-namespace` output).
    #[serde(default)]
    pub daxregion: Option<DaxRegion>,
    #[serde(default)]
    pub state: Option<String>,
}

impl Namespace {
    pub fn mode(&self) -> &str {
        self.mode.as_deref().unwrap_or("raw")
    }

    /// Configured, i.e. not the zero-sized seed a labelled region always offers.
    pub fn is_configured(&self) -> bool {
        self.size
            .as_ref()
            .map(|s| s.bytes() != Some(0))
            .unwrap_or(false)
    }

    pub fn is_enabled(&self) -> bool {
        self.state.as_deref() != Some("disabled")
    }

    /// Name of the device-dax character device (no `/dev/`), if any.
    pub fn chardev(&self) -> Option<&str> {
        self.chardev.as_deref().or_else(|| {
            self.daxregion
                .as_ref()
                .and_then(|r| r.devices.first())
                .map(|d| d.chardev.as_str())
        })
    }

    /// Bytes usable through the namespace's device (the dax device's size for devdax).
    pub fn size_bytes(&self) -> Option<u64> {
        let dax = self
            .daxregion
            .as_ref()
            .and_then(|r| r.devices.first())
            .and_then(|d| d.size.as_ref())
            .and_then(Size::bytes);
        dax.or_else(|| self.size.as_ref().and_then(Size::bytes))
    }

    pub fn align(&self) -> Option<u64> {
        self.align.or_else(|| {
            self.daxregion
                .as_ref()
                .and_then(|r| r.devices.first().and_then(|d| d.align).or(r.align))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Region {
    pub dev: String,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub available_size: Option<Size>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Listed only when dimms are listed too (`-D`).
    #[serde(default)]
    pub mappings: Vec<Mapping>,
    /// Listed only with `-N`.
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub state: Option<String>,
}

impl Region {
    pub fn is_enabled(&self) -> bool {
        self.state.as_deref() != Some("disabled")
    }

    pub fn configured_namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.iter().filter(|n| n.is_configured())
    }
}

/// Everything one `ndctl list` printed, flattened across buses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub dimms: Vec<Dimm>,
    pub regions: Vec<Region>,
    /// Namespaces listed outside any region (`ndctl list -N` without `-R`).
    pub namespaces: Vec<Namespace>,
}

impl Listing {
    pub fn parse(text: &str) -> Result<Listing> {
        let mut listing = Listing::default();
        if text.trim().is_empty() {
            // ndctl prints nothing at all when nothing matched.
            return Ok(listing);
        }
        let value: Value = serde_json::from_str(text).context("ndctl list printed invalid JSON")?;
        listing.absorb(value)?;
        Ok(listing)
    }

    fn absorb(&mut self, value: Value) -> Result<()> {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.absorb(item)?;
                }
            }
            Value::Object(mut map) => {
                let dev = map.get("dev").and_then(Value::as_str).map(str::to_string);
                match dev.as_deref() {
                    Some(d) if d.starts_with("nmem") => {
                        self.dimms.push(serde_json::from_value(Value::Object(map))?)
                    }
                    Some(d) if d.starts_with("region") => self
                        .regions
                        .push(serde_json::from_value(Value::Object(map))?),
                    Some(d) if d.starts_with("namespace") => self
                        .namespaces
                        .push(serde_json::from_value(Value::Object(map))?),
                    // A bus (`-B`) or the platform object: containers of the others.
                    _ => {
                        for key in ["dimms", "regions", "namespaces"] {
                            if let Some(v) = map.remove(key) {
                                self.absorb(v)?;
                            }
                        }
                    }
                }
            }
            other => bail!("unexpected JSON in ndctl list output: {other}"),
        }
        Ok(())
    }

    /// The region a DIMM's capacity belongs to (QEMU gives each NVDIMM its own region).
    pub fn region_of_dimm(&self, dimm: &str) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.mappings.iter().any(|m| m.dimm == dimm))
    }

    pub fn region(&self, dev: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.dev == dev)
    }

    pub fn has_dimm(&self, dev: &str) -> bool {
        self.dimms.iter().any(|d| d.dev == dev)
    }
}

/// Parses what `ndctl create-namespace` prints: one namespace object.
pub fn parse_created_namespace(text: &str) -> Result<Namespace> {
    let start = text
        .find('{')
        .context("ndctl create-namespace printed no JSON object")?;
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Namespace>();
    match de.next() {
        Some(Ok(ns)) => Ok(ns),
        Some(Err(e)) => Err(e).context("ndctl create-namespace printed unexpected JSON"),
        None => bail!("ndctl create-namespace printed no JSON object"),
    }
}

pub fn run(args: &[&str], timeout: Duration) -> CmdOutput {
    command::run(NDCTL, args, timeout)
}

/// `ndctl list -R -D -N -X -i`: every DIMM, region and namespace, idle ones included.
pub fn list_all(timeout: Duration) -> (CmdOutput, Result<Listing>) {
    let out = run(&["list", "-R", "-D", "-N", "-X", "-i"], timeout);
    let parsed = if out.success() {
        Listing::parse(&out.stdout)
    } else {
        Err(anyhow::anyhow!("{}", out.failure_reason()))
    };
    (out, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLANK: &str = include_str!("../testdata/ndctl-list-blank-labels.json");
    const CONFIGURED: &str = include_str!("../testdata/ndctl-list-configured.json");
    const CREATE_FSDAX: &str = include_str!("../testdata/ndctl-create-fsdax.json");
    const CREATE_DEVDAX: &str = include_str!("../testdata/ndctl-create-devdax.json");
    /// Captured from ndctl 76.1 in a debian-6.12 guest (QEMU NVDIMM, 1 GiB, 128K labels).
    const CREATE_DEVDAX_76: &str = include_str!("../testdata/ndctl-create-devdax-76.json");

    #[test]
    fn maps_dimms_to_regions_without_assuming_numbering() {
        let l = Listing::parse(BLANK).unwrap();
        assert_eq!(l.dimms.len(), 3);
        assert_eq!(l.regions.len(), 3);
        // In this listing the firmware numbered regions differently from DIMMs.
        assert_eq!(l.region_of_dimm("nmem0").unwrap().dev, "region1");
        assert_eq!(l.region_of_dimm("nmem1").unwrap().dev, "region0");
        assert_eq!(l.region_of_dimm("nmem2").unwrap().dev, "region2");
        assert!(l.region_of_dimm("nmem3").is_none());
        // Label-less regions come up with one raw namespace spanning the region.
        let r = l.region("region0").unwrap();
        let ns: Vec<_> = r.configured_namespaces().collect();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].mode(), "raw");
        assert_eq!(ns[0].blockdev.as_deref(), Some("pmem0"));
    }

    #[test]
    fn reads_configured_namespaces() {
        let l = Listing::parse(CONFIGURED).unwrap();
        let fs = l.region("region0").unwrap();
        let ns: Vec<_> = fs.configured_namespaces().collect();
        assert_eq!(ns.len(), 1, "the size-0 seed is not configured");
        assert_eq!(ns[0].mode(), "fsdax");
        assert_eq!(ns[0].blockdev.as_deref(), Some("pmem0"));
        assert_eq!(ns[0].size_bytes(), Some(1054867456));
        let dd = l.region("region2").unwrap();
        let ns: Vec<_> = dd.configured_namespaces().collect();
        assert_eq!(ns[0].mode(), "devdax");
        assert_eq!(ns[0].chardev(), Some("dax2.0"));
        assert_eq!(ns[0].align(), Some(2097152));
        assert_eq!(ns[0].size_bytes(), Some(1054867456));
        let seed = dd.namespaces.iter().find(|n| !n.is_configured()).unwrap();
        assert!(!seed.is_enabled());
    }

    #[test]
    fn accepts_every_top_level_form() {
        assert_eq!(Listing::parse("").unwrap(), Listing::default());
        let one = Listing::parse(r#"{"dev":"nmem0","id":"8680-56341200","handle":1,"phys_id":0}"#)
            .unwrap();
        assert_eq!(one.dimms[0].dev, "nmem0");
        let arr = Listing::parse(r#"[{"dev":"region3","size":1,"type":"pmem"}]"#).unwrap();
        assert_eq!(arr.regions[0].dev, "region3");
        let bus = Listing::parse(
            r#"[{"provider":"ACPI.NFIT","dev":"ndbus0","dimms":[{"dev":"nmem0"}],
                "regions":[{"dev":"region0","mappings":[{"dimm":"nmem0","offset":0,"length":1,"position":0}]}]}]"#,
        )
        .unwrap();
        assert_eq!(bus.region_of_dimm("nmem0").unwrap().dev, "region0");
        assert!(Listing::parse("not json").is_err());
    }

    #[test]
    fn parses_create_namespace_output() {
        let ns = parse_created_namespace(CREATE_FSDAX).unwrap();
        assert_eq!(ns.dev, "namespace0.0");
        assert_eq!(ns.mode(), "fsdax");
        assert_eq!(ns.blockdev.as_deref(), Some("pmem0"));
        // Human-readable sizes are kept, not misread as bytes.
        assert_eq!(ns.size_bytes(), None);
        let dd = parse_created_namespace(CREATE_DEVDAX).unwrap();
        assert_eq!(dd.chardev(), Some("dax2.0"));
        assert_eq!(dd.align(), Some(2097152));
        assert!(parse_created_namespace("failed to create namespace: No space left").is_err());
        let real = parse_created_namespace(CREATE_DEVDAX_76).unwrap();
        assert_eq!(real.chardev(), Some("dax1.0"));
        assert_eq!(real.size_bytes(), Some(1054867456));
    }
}
