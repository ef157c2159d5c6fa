//! The Debian package (`packaging/deb.sh`): it builds, installs with `dpkg -i`, and brings the
//! binary, a man page per subcommand and the bash, zsh and fish completions.

use crate::util::*;
use std::path::Path;
use std::process::Command;

/// Removes the package again, even when an assertion failed halfway.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", "imgstream"]).output();
    }
}

#[test]
fn root_the_debian_package_installs_binary_man_pages_and_completions() {
    if !is_root() || !have_tool("dpkg-deb") || !have_tool("man") {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = run_ok(Command::new("bash").arg(repo.join("packaging/deb.sh")).current_dir(repo));
    let deb = repo.join(String::from_utf8(built.stdout).unwrap().trim());
    assert!(deb.extension().is_some_and(|e| e == "deb"), "deb.sh printed {}", deb.display());

    let _installed = Installed;
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    let version = run_ok(Command::new("/usr/bin/imgstream").arg("--version"));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("imgstream "));
    for page in ["imgstream", "imgstream-part", "imgstream-disk", "imgstream-restore", "imgstream-info"] {
        let rendered = run_ok(Command::new("man").args(["-P", "cat", page]).env("MANWIDTH", "100"));
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("SYNOPSIS"), "man {page} rendered without a synopsis:\n{text}");
    }
    for script in [
        "/usr/share/bash-completion/completions/imgstream",
        "/usr/share/zsh/vendor-completions/_imgstream",
        "/usr/share/fish/vendor_completions.d/imgstream.fish",
    ] {
        let text = std::fs::read_to_string(script).unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(text.contains("backup-disk"), "{script} does not complete the subcommands");
    }
    // The bash script is valid bash that defines the completion function.
    run_ok(
        Command::new("bash")
            .args(["-c", "source /usr/share/bash-completion/completions/imgstream && declare -F _imgstream"]),
    );
}
