//! Profiles that must load, and the errors of those that must not — each naming the place.

use super::*;

/// The reference's own profile, as the repository ships it.
fn reference_text() -> String {
    std::fs::read_to_string(
        harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR"))
            .join("../targets/reference/target.toml"),
    )
    .expect("targets/reference/target.toml")
}

fn load_text(text: &str) -> Result<Profile, ProfileError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.toml");
    std::fs::write(&path, text).unwrap();
    Profile::load(&path)
}

#[test]
fn the_reference_profile_loads_and_offers_everything() {
    let p = load_text(&reference_text()).unwrap();
    assert_eq!(p.name, "harbor-reference");
    let offered = p.offered();
    for c in Capability::ALL {
        assert!(offered.contains(&c), "{c:?}");
    }
    let without_clock =
        load_text(&reference_text().replace("[clock]\nprotocol = 1\n", "")).unwrap();
    assert!(!without_clock.offered().contains(&Capability::Clock));
    // Its routes are the reference's own.
    let reference = Routes::reference();
    for op in WorkspaceOp::ALL {
        assert_eq!(p.routes.requests[&op], reference.requests[&op], "{op}");
    }
}

#[test]
fn bad_profiles_are_refused_naming_the_place() {
    let good = reference_text();
    let cases: &[(&str, &str, &str)] = &[
        (
            "\nsync = {",
            "\nsynch = {",
            "operations.synch: unknown operation",
        ),
        (
            "/v1/workspaces/{workspace}/activation",
            "/v1/workspaces/{worksapce}/activation",
            "operations.activate.path: unknown placeholder {worksapce}",
        ),
        (
            "HARBOR_DATABASE_URL = \"{database_url}\"",
            "HARBOR_DATABASE_URL = \"{databse_url}\"",
            "lifecycle.env.HARBOR_DATABASE_URL: unknown placeholder {databse_url}",
        ),
        ("format = 1", "format = 7", "this harness reads format 1"),
        (
            "command = [\"./start.sh\"]",
            "command = [\"./start.sh\", \"--port\", \"{port}\"]",
            "lifecycle.command: \"{port}\" names {port}, but the command is not a template",
        ),
        (
            "command = [\"./start.sh\"]",
            "command = [\"./start.sh\", \"--listen\", \"{database_url}\"]",
            "lifecycle.command: \"{database_url}\" names {database_url}",
        ),
        (
            "[target]",
            "[target]\nsurprise = true",
            "line 9, column 1: unknown field `surprise`",
        ),
        (
            "decline = []",
            "decline = [\"teleport\"]",
            "capabilities.decline: unknown capability \"teleport\"",
        ),
        (
            "error_code = \"/error/code\"",
            "error_code = \"error.code\"",
            "answers.error_code: \"error.code\" is not a JSON pointer",
        ),
        (
            "[answers]",
            "[answers.codes]\nGONE = \"NOT_A_HARBOR_CODE\"\n[answers]",
            "answers.codes.GONE: \"NOT_A_HARBOR_CODE\" is not one of Harbor's error codes",
        ),
        (
            "[fixtures]",
            "[database.queries]\nqbo_status = \"SELECT set_config('a.b', '1', false); SELECT 'X' AS status\"\n[fixtures]",
            "database.queries.qbo_status: one statement",
        ),
        (
            "[lifecycle.files.providers",
            "[lifecycle.files.\"../escape\"]\ntext = \"x\"\n[lifecycle.files.providers",
            "a file's name is letters",
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "the reference profile has no {from:?}");
        let bad = good.replacen(from, to, 1);
        let e = load_text(&bad).expect_err(want).to_string();
        assert!(e.contains(want), "{e}\n  does not say {want:?}");
        assert!(e.contains("target.toml"), "{e} names no file");
    }
    let missing = load_text("format = 1\n").unwrap_err().to_string();
    assert!(missing.contains("missing field"), "{missing}");
    let unreadable = Profile::load(Path::new("/nonexistent/target.toml")).unwrap_err();
    assert!(unreadable.to_string().contains("cannot read it"));
}

/// The flask port's deployed profile, with `{env:…}` values set as `deploy.py` would.
fn deployed_text() -> String {
    std::fs::read_to_string(
        harbor_layering::crate_dir(env!("CARGO_MANIFEST_DIR"))
            .join("../targets/flask-seed/deployed/target.toml"),
    )
    .expect("targets/flask-seed/deployed/target.toml")
}

#[test]
fn a_deployed_profile_offers_what_a_running_service_can_and_names_its_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gateway.key");
    crate::identity::write_service_keys(dir.path()).unwrap();
    let text = deployed_text()
        .replace("{env:FLASK_DEPLOYED_URL}", "http://127.0.0.1:5001/")
        .replace(
            "{env:FLASK_DEPLOYED_DATABASE_URL}",
            "postgres://auditor:secret@db.example/app",
        )
        .replace(
            "{env:FLASK_DEPLOYED_SIGNING_KEY}",
            &key.display().to_string(),
        );
    let p = load_text(&text).unwrap();
    let d = p.deployed.as_ref().expect("deployed");
    assert_eq!(d.urls, ["http://127.0.0.1:5001"]);
    assert!(
        !format!("{d:?}").contains("secret"),
        "the database password stays out of Debug"
    );
    let offered = p.offered();
    for c in [Capability::Database, Capability::WorkspaceLock] {
        assert!(offered.contains(&c), "{c:?}");
    }
    for c in [
        Capability::Faults,
        Capability::Crash,
        Capability::ProviderControl,
        Capability::IsolatedDatabase,
        Capability::ReferenceSchema,
    ] {
        assert!(!offered.contains(&c), "{c:?}");
    }
    let two = crate::target::Setup {
        replicas: 2,
        ..crate::target::Setup::default()
    };
    assert!(p
        .cannot_set(&two)
        .unwrap()
        .contains("deployed target has 1"));
    let cases: &[(&str, &str, &str)] = &[
        (
            "http://127.0.0.1:5001/",
            "{env:HARBOR_SURELY_UNSET_VARIABLE}",
            "deployed.urls[0]: {env:HARBOR_SURELY_UNSET_VARIABLE} is not set",
        ),
        ("http://127.0.0.1:5001/", "ftp://x", "not an http(s) URL"),
        (
            "[deployed]",
            "[lifecycle]\ncommand = [\"x\"]\n[deployed]",
            "not both",
        ),
        (
            &key.display().to_string(),
            "/nonexistent/gateway.key",
            "deployed.signing_key: /nonexistent/gateway.key",
        ),
    ];
    for (from, to, want) in cases {
        let e = load_text(&text.replacen(from, to, 1))
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "{e}\n  does not say {want:?}");
    }
    // A URL the profile takes from the environment may be a secret set in the wrong place: its
    // errors name the entry, never the value.
    for wrong in [
        "postgres://auditor:hunter2@db/x",
        "http://auditor:hunter2@[::1",
    ] {
        let e = load_text(&text.replacen("http://127.0.0.1:5001/", wrong, 1))
            .expect_err(wrong)
            .to_string();
        assert!(e.contains("deployed.urls[0]"), "{e}");
        assert!(!e.contains("hunter2"), "the value is echoed: {e}");
    }
}
