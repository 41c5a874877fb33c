//! End-to-end tests of the `lifeboat` binary against real repositories: a
//! directory on local disk and a real Garage S3 server started per test.

#![allow(clippy::unwrap_used)]

mod cli;
mod dump;
mod harness;
mod pg;
mod redis;
mod restore;
mod scenarios;

use std::fs;
use std::time::{Duration, Instant};

use harness::*;

/// Runs each scenario against both backends.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::scenarios::$name(&super::Env::new(super::Backend::Local)); } )*
        }
        mod s3 {
            $( #[test] fn $name() { super::scenarios::$name(&super::Env::new(super::Backend::S3)); } )*
        }
    };
}

on_every_backend!(
    round_trip_is_byte_identical,
    stream_round_trip,
    unchanged_data_stores_under_one_percent,
    one_percent_change_stores_under_five_percent,
    wrong_password_is_named_and_writes_nothing,
    flipped_byte_is_found_and_other_snapshots_still_restore,
    killed_backup_leaves_a_clean_repository_and_is_reused,
    concurrent_backups_both_restore,
    unknown_format_version_is_refused_by_name,
    key_slots_add_list_remove,
    missing_repository_is_named,
    unreadable_file_needs_allow_partial,
    a_failed_restore_leaves_only_complete_files,
    verify_racing_backups_reports_no_false_damage,
    a_lost_index_object_is_rebuilt_from_the_packs,
);

#[test]
fn s3_server_stopped_mid_backup_then_restarted() {
    let mut env = Env::new(Backend::S3);
    env.init(&["--pack-size", "1MiB"]);
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    let size = 48usize << 20;
    fs::write(src.join("big.bin"), random_bytes(size, 21)).unwrap();
    let child = env.spawn(&["--json", "files", "backup", src.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.keys("packs/").is_empty() {
        assert!(Instant::now() < deadline, "no pack was uploaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The outage: stop the server for a few seconds, then bring it back.
    env.garage.as_mut().unwrap().stop();
    std::thread::sleep(Duration::from_secs(3));
    env.garage
        .as_mut()
        .unwrap()
        .restart()
        .expect("restart Garage");
    let out = child.wait_with_output().unwrap();
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(
        v["clean"], true,
        "never a snapshot that points at missing data: {v}"
    );
    if out.status.success() {
        let t = env.restore_dir("latest", "restore");
        assert_eq!(
            fs::read(restored(&t, &src).join("big.bin")).unwrap(),
            random_bytes(size, 21)
        );
    } else {
        let err = stderr(&out);
        assert!(err.contains("s3://"), "the failure names the store: {err}");
        assert!(env.keys("snapshots/").is_empty());
    }
}

#[test]
fn config_file_supplies_repository_and_password() {
    let env = Env::new(Backend::Local);
    let pw = env.path("pw");
    fs::write(&pw, "from a file\n").unwrap();
    let cfg = env.path("lifeboat.toml");
    fs::write(
        &cfg,
        format!(
            "repo = {:?}\npassword_file = {:?}\n",
            env.repo,
            pw.display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        env.cmd()
            .env_remove("LIFEBOAT_REPO")
            .env_remove("LIFEBOAT_PASSWORD")
            .env("LIFEBOAT_CONFIG", &cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["repo", "init", "--kdf-memory", "8MiB"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["--json", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // A bad config file is a configuration error naming the file.
    fs::write(&cfg, "repo = [unclosed").unwrap();
    let out = run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("lifeboat.toml"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new(Backend::Local);
    let out = env.run(&["files", "restore", "latest"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --target is a usage error"
    );
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no repository given"),
        "{}",
        stderr(&out)
    );
    env.init(&[]);
    let out = env.run(&["repo", "init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = env.run(&["ls", "ffffffff"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pg_pitr_to_a_named_restore_point_lands_exactly() {
    pg::pitr_to_a_named_restore_point_lands_exactly();
}

#[test]
fn pg_wal_push_is_idempotent_and_refuses_different_content() {
    pg::wal_push_is_idempotent_and_refuses_different_content();
}

#[test]
fn pg_restore_refuses_a_non_empty_directory_and_a_running_server() {
    pg::restore_refuses_a_non_empty_directory_and_a_running_server();
}

#[test]
fn pg_incremental_after_a_small_change_stores_little() {
    pg::incremental_after_a_small_change_stores_little();
}

#[test]
fn pg_a_flipped_byte_in_a_relation_file_is_named_by_file_and_block() {
    pg::a_flipped_byte_in_a_relation_file_is_named_by_file_and_block();
}

#[test]
fn pg_pitr_by_xid_lsn_and_time_lands_exactly() {
    pg::pitr_by_xid_lsn_and_time_lands_exactly();
}

#[test]
fn pg_pitr_to_a_point_on_a_second_timeline() {
    pg::pitr_to_a_point_on_a_second_timeline();
}

#[test]
fn pg_restore_refuses_unreachable_targets_and_unknown_snapshots() {
    pg::restore_refuses_unreachable_targets_and_unknown_snapshots();
}

#[test]
fn pg_info_and_check_see_the_archive_and_its_gaps() {
    pg::info_and_check_see_the_archive_and_its_gaps();
}

#[test]
fn pg_a_failing_archive_command_fails_the_backup_and_check_names_it() {
    pg::a_failing_archive_command_fails_the_backup_and_check_names_it();
}

#[test]
fn pg_a_backup_under_pgbench_restores_and_passes_amcheck() {
    pg::a_backup_under_pgbench_restores_and_passes_amcheck();
}

#[test]
fn pg_an_incremental_restores_the_same_bytes_as_a_full() {
    pg::an_incremental_restores_the_same_bytes_as_a_full();
}

#[test]
fn pg_a_killed_wal_push_loses_nothing() {
    pg::a_killed_wal_push_loses_nothing();
}

#[test]
fn pg_bad_input_to_pg_commands_is_named() {
    pg::bad_input_to_pg_commands_is_named();
}

#[test]
fn pg_the_demo_restores_every_row_before_the_incident() {
    pg::the_demo_restores_every_row_before_the_incident();
}

#[test]
fn pg_the_demo_counts_the_rows_a_lost_primary_takes_with_it() {
    pg::the_demo_counts_the_rows_a_lost_primary_takes_with_it();
}

#[test]
fn pg_a_repository_of_the_previous_release_reads_and_restores() {
    pg::a_repository_of_the_previous_release_reads_and_restores();
}

#[test]
fn pg_tablespaces_are_backed_up_and_restored_where_mapped() {
    pg::tablespaces_are_backed_up_and_restored_where_mapped();
}

#[test]
fn pg_recovery_can_pause_shut_down_run_as_standby_and_restore_over_itself() {
    pg::recovery_can_pause_shut_down_run_as_standby_and_restore_over_itself();
}

#[test]
fn pg_a_lost_backup_session_fails_the_backup() {
    pg::a_lost_backup_session_fails_the_backup();
}

#[test]
fn pg12_backs_up_and_recovers_to_a_point() {
    pg::an_older_version_backs_up_and_recovers_to_a_point(12);
}

#[test]
fn pg13_backs_up_and_recovers_to_a_point() {
    pg::an_older_version_backs_up_and_recovers_to_a_point(13);
}

#[test]
fn pg14_backs_up_and_recovers_to_a_point() {
    pg::an_older_version_backs_up_and_recovers_to_a_point(14);
}

#[test]
fn pg_a_pg_wal_link_is_restored_as_a_directory_of_its_own() {
    pg::a_pg_wal_link_is_restored_as_a_directory_of_its_own();
}

#[test]
fn pg_verify_read_data_finds_a_damaged_wal_segment() {
    pg::verify_read_data_finds_a_damaged_wal_segment();
}

#[test]
fn pg_a_dump_restores_identical_tables_one_table_and_the_roles() {
    dump::a_dump_restores_identical_tables_one_table_and_the_roles();
}

#[test]
fn pg_a_dump_after_a_small_change_stores_little() {
    dump::a_dump_after_a_small_change_stores_little();
}

#[test]
fn pg_a_failing_dump_is_named_and_leaves_no_snapshot() {
    dump::a_failing_dump_is_named_and_leaves_no_snapshot();
}

#[test]
fn redis_every_type_comes_back_identical_through_both_framings() {
    redis::every_type_comes_back_identical_through_both_framings();
}

#[test]
fn redis_logins_and_refusals_are_named() {
    redis::logins_and_refusals_are_named();
}

#[test]
fn redis_a_damaged_rdb_is_refused_before_it_is_recorded() {
    redis::a_damaged_rdb_is_refused_before_it_is_recorded();
}

#[test]
fn redis_the_aof_directory_is_backed_up_and_loads() {
    redis::the_aof_directory_is_backed_up_and_loads();
}

#[test]
fn redis_tls_is_checked_against_the_ca_given() {
    redis::tls_is_checked_against_the_ca_given();
}

#[test]
fn pg_wal_push_and_fetch_work_ahead() {
    pg::wal_push_and_fetch_work_ahead();
}

#[test]
fn pg_wal_fetch_works_ahead_with_64_mib_segments() {
    pg::wal_fetch_works_ahead_with_64_mib_segments();
}

#[test]
fn restore_refuses_a_busy_target_and_never_follows_planted_links() {
    restore::restore_refuses_a_busy_target_and_never_follows_planted_links();
}

#[test]
fn names_are_bytes_and_special_files_come_back() {
    restore::names_are_bytes_and_special_files_come_back();
}

#[test]
fn a_repository_an_older_release_wrote_still_reads() {
    restore::a_repository_an_older_release_wrote_still_reads();
}

#[test]
fn pg_a_failed_restore_is_not_startable_and_delta_finishes_it() {
    pg::a_failed_restore_is_not_startable_and_delta_finishes_it();
}

#[test]
fn pg_a_trial_restore_archiving_here_is_never_followed_by_accident() {
    pg::a_trial_restore_archiving_here_is_never_followed_by_accident();
}

#[test]
fn help_never_shows_a_secret() {
    cli::help_never_shows_a_secret();
}

#[test]
fn a_closed_standard_output_ends_quietly() {
    cli::a_closed_standard_output_ends_quietly();
}

#[test]
fn relative_and_wrong_repository_paths() {
    cli::relative_and_wrong_repository_paths();
}

#[test]
fn repository_files_are_private() {
    cli::repository_files_are_private();
}

#[test]
fn a_damaged_key_slot_is_told_from_a_wrong_password() {
    cli::a_damaged_key_slot_is_told_from_a_wrong_password();
}

#[test]
fn leftovers_of_killed_writes_are_reported_and_removed() {
    cli::leftovers_of_killed_writes_are_reported_and_removed();
}
