//! Bisects a real behaviour change over served Debian kernels: io_uring fixed-buffer
//! registration of a device-dax mapping is refused by 6.1 and allowed from 6.5 on (the
//! decision moved to gup). Boots real kernels: `ci/test.sh` runs it with `--ignored`.

use std::path::Path;
use std::time::Duration;

use daxdiff::bisect::versions::{self, from_file};
use daxdiff::bisect::{Role, Session, Settings, Signal, State, StepVerdict, VmTester};
use daxdiff::setup::Env;

fn program() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpora/uring_fixed_devdax.prog");
    daxdiff::exec::load_program(&path).unwrap().to_text()
}

#[test]
#[ignore = "boots three Debian kernels under QEMU (fetched on first use)"]
fn uring_devdax_registration_changes_between_6_1_and_6_12() {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let served = versions::served(&env.cache).unwrap();
    let newest = |prefix: &str| {
        served
            .iter()
            .filter(|c| c.upstream.starts_with(prefix))
            .max_by(|a, b| daxdiff::images::apt::compare_versions(&a.version, &b.version))
            .unwrap_or_else(|| panic!("the mirror serves no {prefix} kernel"))
            .version
            .clone()
    };
    let list = format!(
        "{}\n{}\n{}\n",
        newest("6.1."),
        newest("6.12."),
        newest("7.3.")
    );
    let cands = from_file(&list, "test", &served).unwrap();
    // Call 5 is io_uring_register$REGISTER_BUFFERS of the devdax mapping.
    let signal = Signal::BadIf(vec!["call 5 returns 0".parse().unwrap()]);
    // Three runs per end: a deterministic change then decides a step in two runs, and the
    // ends and the step are each right with probability 0.98.
    let settings = Settings {
        end_runs: 3,
        ..Settings::default()
    };
    let out = tempfile::tempdir().unwrap();
    let state_path = out.path().join("state.json");
    let mut tester = VmTester {
        env: env.clone(),
        program: program(),
        timeout: Duration::from_secs(30),
        probe: signal.reads_refcounts(),
        boot_per_run: false,
        status: Box::new(|m| eprintln!("{m}")),
    };
    let mut session = Session::new(&signal, settings, State::open(&state_path, "t").unwrap());
    let r = versions::bisect(&mut session, &mut tester, &cands).unwrap();
    assert_eq!(
        r.first_new.as_deref(),
        Some(cands[1].version.as_str()),
        "{r:#?}"
    );
    assert_eq!(r.last_old, cands[0].version);
    let step = r.steps.iter().find(|s| s.role == Role::Step).unwrap();
    assert_eq!(step.verdict, StepVerdict::Bad);
    assert!(step.tally.bad >= 2 && step.tally.good == 0, "{step:?}");
    assert!(r.confidence > 0.93, "{}", r.confidence);

    // The same bisection again resumes from the state file: nothing is booted.
    let mut again = Session::new(&signal, settings, State::open(&state_path, "t").unwrap());
    let started = std::time::Instant::now();
    let r2 = versions::bisect(&mut again, &mut tester, &cands).unwrap();
    assert_eq!(r2.first_new, r.first_new);
    assert!(started.elapsed() < Duration::from_secs(5));
}
