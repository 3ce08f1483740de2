//! `refcounts`: the reference-count probe's debugfs reading (`vm-images/probe`) as JSON, each
//! range named by the namespace that holds it and the role bring-up gave that namespace.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use daxdiff_prog::wire::{RangeRefcounts, RefHistogram, RefcountReading};

use crate::topology::Topology;

/// Where the probe module publishes its reading.
pub const DEBUGFS_PATH: &str = "/sys/kernel/debug/daxdiff/refcounts";
/// The probe output format this parser knows.
pub const FORMAT_VERSION: u32 = 1;

/// An nd namespace's physical extent, from sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceExtent {
    pub name: String,
    pub start: u64,
    pub size: u64,
}

/// Reads the probe, then names each range after its namespace and role.
pub fn read(topology: Option<&Topology>) -> Result<RefcountReading> {
    let text = match std::fs::read_to_string(DEBUGFS_PATH) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{DEBUGFS_PATH} does not exist: the daxdiff_probe module is not loaded (the boot \
             console's `daxdiff-init: probe-missing` line says why; the host warns when it \
             cannot build the probe for a kernel)"
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {DEBUGFS_PATH}")),
    };
    let mut reading = parse(&text)?;
    annotate(&mut reading, &namespace_extents(), topology);
    Ok(reading)
}

/// Parses the probe's text format (described in `vm-images/probe/daxdiff_probe.c`).
pub fn parse(text: &str) -> Result<RefcountReading> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let version: u32 = header
        .strip_prefix("daxdiff-refcounts ")
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("not a daxdiff probe reading (first line {header:?})"))?;
    if version != FORMAT_VERSION {
        bail!("the probe writes format {version}, this executor reads {FORMAT_VERSION}: rebuild the guest image");
    }
    let mut ranges = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("range") => {
                let fields: BTreeMap<&str, &str> =
                    words.filter_map(|w| w.split_once('=')).collect();
                ranges.push(range(&fields).with_context(|| format!("probe line {line:?}"))?);
            }
            Some("truncated") => bail!(
                "the probe's fixed tables overflowed ({line}); raise the limit in daxdiff_probe.c"
            ),
            Some(other) => bail!("unknown probe line kind {other:?} in {line:?}"),
            None => {}
        }
    }
    Ok(RefcountReading { version, ranges })
}

fn range(f: &BTreeMap<&str, &str>) -> Result<RangeRefcounts> {
    let get = |k: &str| f.get(k).copied().with_context(|| format!("no {k}="));
    let num = |k: &str| -> Result<i64> {
        let v = get(k)?;
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => i64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.with_context(|| format!("{k}={v} is not a number"))
    };
    let unsigned = |k: &str| -> Result<u64> {
        u64::try_from(num(k)?).with_context(|| format!("{k} is negative"))
    };
    Ok(RangeRefcounts {
        pgmap: unsigned("pgmap")? as u32,
        index: unsigned("index")? as u32,
        nr_range: unsigned("nr_range")? as u32,
        kind: get("type")?.to_string(),
        start: unsigned("start")?,
        end: unsigned("end")?,
        first_pfn: unsigned("first_pfn")?,
        pages: unsigned("pages")?,
        pgmap_ref: num("ref")?,
        tails: unsigned("tails")?,
        compound: unsigned("compound")?,
        histogram: RefHistogram {
            zero: unsigned("ref0")?,
            one: unsigned("ref1")?,
            two: unsigned("ref2")?,
            three_plus: unsigned("ref3plus")?,
            negative: unsigned("neg")?,
        },
        max: num("max")?,
        namespace: None,
        role: None,
    })
}

/// Every nd namespace with an extent (`/sys/bus/nd/devices/namespaceX.Y/{resource,size}`).
pub fn namespace_extents() -> Vec<NamespaceExtent> {
    let Ok(dir) = std::fs::read_dir("/sys/bus/nd/devices") else {
        return vec![];
    };
    let read_num = |p: &Path| -> Option<u64> {
        let s = std::fs::read_to_string(p).ok()?;
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    };
    let mut v: Vec<NamespaceExtent> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with("namespace") {
                return None;
            }
            let start = read_num(&e.path().join("resource"))?;
            let size = read_num(&e.path().join("size"))?;
            (size > 0).then_some(NamespaceExtent { name, start, size })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Names each range after the namespace containing its start, and that namespace's role.
pub fn annotate(
    reading: &mut RefcountReading,
    namespaces: &[NamespaceExtent],
    topology: Option<&Topology>,
) {
    for r in &mut reading.ranges {
        let Some(ns) = namespaces
            .iter()
            .find(|n| r.start >= n.start && r.start - n.start < n.size)
        else {
            continue;
        };
        r.namespace = Some(ns.name.clone());
        r.role = topology.and_then(|t| {
            t.fs.iter()
                .find(|f| f.namespace == ns.name)
                .map(|f| f.role.as_str().to_string())
                .or_else(|| {
                    t.devdax
                        .iter()
                        .any(|d| d.namespace == ns.name)
                        .then(|| "devdax".to_string())
                })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootcfg::Role;
    use crate::topology::{DevDax, FsMount};

    const OLD: &str = include_str!("../testdata/probe-refcounts-6.12.txt");
    const NEW: &str = include_str!("../testdata/probe-refcounts-7.3.txt");

    #[test]
    fn readings_from_both_schemes_parse() {
        let old = parse(OLD).unwrap();
        assert_eq!(old.ranges.len(), 3);
        let ext4 = &old.ranges[0];
        assert_eq!(ext4.kind, "fsdax");
        assert_eq!((ext4.start, ext4.end), (0x1_0000_0000, 0x1_3fff_ffff));
        assert_eq!(ext4.first_pfn, 0x101200);
        // The old scheme: idle fsdax pages hold one reference, and so does each on the pgmap.
        assert_eq!(ext4.histogram.one, ext4.pages);
        assert_eq!(ext4.pgmap_ref, ext4.pages as i64 + 1);
        let devdax = &old.ranges[2];
        assert_eq!((devdax.kind.as_str(), devdax.compound), ("devdax", 503));
        assert_eq!(devdax.tails + devdax.compound, devdax.pages);
        let new = parse(NEW).unwrap();
        assert_eq!(new.ranges[0].histogram.zero, new.ranges[0].pages);
        assert_eq!(new.ranges[0].max, 0);
    }

    #[test]
    fn wrong_or_damaged_readings_are_refused_with_the_reason() {
        let e = parse("hello\n").unwrap_err().to_string();
        assert!(e.contains("not a daxdiff probe reading"), "{e}");
        let e = parse("daxdiff-refcounts 2\n").unwrap_err().to_string();
        assert!(e.contains("format 2"), "{e}");
        let e = format!("{:#}", parse(&OLD.replace(" ref=257537", "")).unwrap_err());
        assert!(e.contains("no ref="), "{e}");
        let e = parse("daxdiff-refcounts 1\ntruncated pgmaps=64\n").unwrap_err();
        assert!(e.to_string().contains("overflowed"), "{e}");
        // An underflow is a reading, not a parse error.
        let neg = OLD
            .replace("ref=504", "ref=-3")
            .replace("neg=0 max=1\n", "neg=1 max=-1\n");
        let r = parse(&neg).unwrap();
        assert_eq!(r.ranges[2].pgmap_ref, -3);
        assert_eq!(r.ranges[2].histogram.negative, 1);
    }

    #[test]
    fn ranges_are_named_by_namespace_and_role() {
        let mut r = parse(OLD).unwrap();
        let ns = |name: &str, start: u64| NamespaceExtent {
            name: name.into(),
            start,
            size: 1 << 30,
        };
        let namespaces = [
            ns("namespace0.0", 0x1_0000_0000),
            ns("namespace1.0", 0x1_8000_0000),
            ns("namespace2.0", 0x1_4000_0000),
        ];
        let fs = |role, namespace: &str| FsMount {
            role,
            region: String::new(),
            namespace: namespace.into(),
            blockdev: String::new(),
            mountpoint: String::new(),
            dax: true,
        };
        let topo = Topology {
            ok: true,
            fs: vec![
                fs(Role::Ext4, "namespace0.0"),
                fs(Role::Xfs, "namespace2.0"),
            ],
            devdax: vec![DevDax {
                region: "region1".into(),
                namespace: "namespace1.0".into(),
                chardev: "/dev/dax1.0".into(),
                align: 2 << 20,
                size: 1 << 30,
            }],
            ..Topology::default()
        };
        annotate(&mut r, &namespaces, Some(&topo));
        let named: Vec<_> = r
            .ranges
            .iter()
            .map(|x| (x.namespace.as_deref(), x.role.as_deref()))
            .collect();
        assert_eq!(
            named,
            [
                (Some("namespace0.0"), Some("ext4")),
                (Some("namespace2.0"), Some("xfs")),
                (Some("namespace1.0"), Some("devdax")),
            ]
        );
        // Without a topology the namespace is still known; outside every namespace, nothing.
        let mut r = parse(OLD).unwrap();
        annotate(&mut r, &namespaces[..1], None);
        assert_eq!(r.ranges[0].namespace.as_deref(), Some("namespace0.0"));
        assert_eq!(r.ranges[0].role, None);
        assert_eq!(r.ranges[1].namespace, None);
    }
}
