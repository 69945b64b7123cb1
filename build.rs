//! Build facts for `mc-launcher --version`: the git commit, the target
//! triple and the build date. The date comes from SOURCE_DATE_EPOCH (or the
//! commit's own date), never from the clock, so that two builds of one
//! commit give the same bytes (scripts/release.sh, tests/release.rs).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

/// `YYYY-MM-DD` (UTC) of a Unix time: days to a civil date (H. Hinnant's
/// algorithm), no dependency needed for one line of output.
fn utc_date(epoch: i64) -> String {
    let z = epoch.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=MC_BUILD_COMMIT");
    // scripts/build-static.sh links the code listed there together.
    println!("cargo:rerun-if-changed=scripts/hot-sections.txt");
    // A new commit (or checkout) changes HEAD's reflog; in a worktree the
    // git dir is not .git itself.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
    }
    let commit = std::env::var("MC_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%ct"]))
        .and_then(|s| s.trim().parse::<i64>().ok());
    let date = epoch.map_or_else(|| "unknown".into(), utc_date);
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=MC_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=MC_BUILD_DATE={date}");
    println!("cargo:rustc-env=MC_BUILD_TARGET={target}");
}
