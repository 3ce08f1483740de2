//! What commands print for scripts (`--json`): one JSON document per command, each naming
//! its schema and version, so a farm's scripts can tell a format change from a result.

use serde::Serialize;

/// The documents `--json` prints, each with its version. A version goes up when a field
/// is removed or changes meaning; new fields keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    ImagesList,
    ImagesFetch,
    Show,
    Repro,
    Report,
    Suite,
    Bisect,
    /// One line per program (JSON lines).
    Run,
    /// One line per kernel (JSON lines).
    Refcounts,
    BenchFuzz,
    BenchExec,
    BenchBoot,
}

impl Schema {
    pub fn id(self) -> &'static str {
        match self {
            Schema::ImagesList => "daxdiff.images-list/1",
            Schema::ImagesFetch => "daxdiff.images-fetch/1",
            Schema::Show => "daxdiff.show/2",
            Schema::Repro => "daxdiff.repro/1",
            Schema::Report => "daxdiff.report/1",
            Schema::Suite => "daxdiff.suite/1",
            Schema::Bisect => "daxdiff.bisect/1",
            Schema::Run => "daxdiff.run/1",
            Schema::Refcounts => "daxdiff.refcounts/1",
            Schema::BenchFuzz => "daxdiff.bench-fuzz/1",
            Schema::BenchExec => "daxdiff.bench-exec/1",
            Schema::BenchBoot => "daxdiff.bench-boot/1",
        }
    }
}

#[derive(Serialize)]
struct Document<'a, T: Serialize> {
    schema: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` (a struct or map: its fields go beside `schema`) as the pretty JSON text printed.
pub fn document<T: Serialize>(schema: Schema, body: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&Document {
        schema: schema.id(),
        body,
    })
}

/// `body` as one line of a JSON-lines stream, with its schema.
pub fn line<T: Serialize>(schema: Schema, body: &T) -> serde_json::Result<String> {
    serde_json::to_string(&Document {
        schema: schema.id(),
        body,
    })
}

/// Prints [`document`] on stdout.
pub fn print<T: Serialize>(schema: Schema, body: &T) -> anyhow::Result<()> {
    println!("{}", document(schema, body)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_sits_beside_the_fields() {
        #[derive(Serialize)]
        struct Body {
            kernels: Vec<&'static str>,
        }
        let text = document(
            Schema::ImagesList,
            &Body {
                kernels: vec!["debian-6.12"],
            },
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], "daxdiff.images-list/1");
        assert_eq!(v["kernels"][0], "debian-6.12");
    }
}
