//! The seed corpus: every program parses against the built-in descriptions, prints back
//! byte for byte, survives JSON, and says in a comment what it exercises.

use std::path::PathBuf;

use daxdiff_prog::analysis::pins_dax_page;
use daxdiff_prog::{parse, Program, Target};

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("corpora/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "prog"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn corpus_covers_the_bug_classes() {
    let names: Vec<String> = corpus().into_iter().map(|(n, _)| n).collect();
    for needle in [
        "evict",
        "truncate",
        "punch",
        "devdax_disable",
        "fork",
        "uring",
        "odirect",
        "vmsplice",
        "map_sync",
        "huge",
    ] {
        assert!(
            names.iter().any(|n| n.contains(needle)),
            "no corpus program about {needle}: {names:?}"
        );
    }
}

#[test]
fn every_corpus_program_round_trips_exactly() {
    let t = Target::builtin();
    for (name, text) in corpus() {
        let prog = parse(t, &text).unwrap_or_else(|e| panic!("{name}:{e}"));
        assert_eq!(
            prog.to_text(),
            text,
            "{name} does not print back identically"
        );
    }
}

#[test]
fn every_corpus_program_round_trips_through_json() {
    let t = Target::builtin();
    for (name, text) in corpus() {
        let prog = parse(t, &text).unwrap();
        let json = serde_json::to_string(&prog).unwrap();
        let back: Program = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prog, "{name}");
        assert_eq!(back.to_text(), text, "{name}");
    }
}

#[test]
fn every_corpus_program_starts_with_a_comment_saying_what_it_exercises() {
    for (name, text) in corpus() {
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with("# ") && first.len() > 20,
            "{name} lacks a leading comment"
        );
    }
}

#[test]
fn pinning_seeds_pin_a_dax_page_and_the_rest_do_not_pretend_to() {
    let t = Target::builtin();
    for (name, text) in corpus() {
        let prog = parse(t, &text).unwrap();
        // These exercise mappings, faults and fork without any gup pin.
        let unpinned = [
            "devdax_disable_while_mapped",
            "fork_shared_truncate",
            "huge_aligned_mappings",
        ];
        let expect = !unpinned.iter().any(|u| name.starts_with(u));
        assert_eq!(pins_dax_page(t, &prog), expect, "{name}");
    }
}
