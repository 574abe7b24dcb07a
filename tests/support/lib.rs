//! Shared test support.

pub mod contract;
pub mod crashes;
pub mod drift;
pub mod dumps;
pub mod encryption;
pub mod encryption_failures;
pub mod failures;
pub mod keys;
pub mod ledger;
pub mod migrations;
pub mod pg;
pub mod poison;
pub mod replays;
pub mod reporting;
pub mod snapshots;
pub mod stored_events;
pub mod tables;
pub mod upcasting;
pub mod windows;

/// One `#[tokio::test]` per check of the store conformance suite ([`contract`],
/// [`drift`] and [`tables`]), named after the check, each on a fresh store: a failing check hides no
/// other.
///
/// The argument makes the fresh store: `let` statements first, for whatever must outlive
/// the check (a temporary directory, a database), then the store expression. Both may
/// `.await`. With `flavor: multi_thread;` in front, every test runs on two worker threads.
///
/// ```ignore
/// projector_tests::contract_tests!(MyStore::open_in_memory().expect("a store"));
/// projector_tests::contract_tests!(flavor: multi_thread; let db = TestDb::new().await; db.store().await);
/// ```
#[macro_export]
macro_rules! contract_tests {
    (flavor: multi_thread; $($fresh:tt)+) => {
        $crate::contract_tests!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] { $($fresh)+ });
    };
    (@tests $attr:tt $fresh:tt) => {
        $crate::__store_tests!($attr $fresh contract:
            append_and_read_back,
            expected_version_conflict,
            concurrent_appends_one_wins,
            idempotency,
            read_aggregate_bounds,
            read_all_paging_filters_and_partitions,
            register_and_claim,
            commit_moves_checkpoint_and_writes_rows,
            status_and_lag,
            rescale_needs_aligned_checkpoints,
            end_to_end_with_the_example_projections,
            abandoned_rebuild_changes_nothing,
        );
        $crate::__store_tests!($attr $fresh drift:
            an_idempotency_key_reused_for_another_aggregate_is_refused,
            an_idempotency_key_reused_with_other_events_is_refused,
            a_rebuild_adds_its_events_once_to_the_applied_count,
            a_failed_status_counts_an_error,
            a_dead_letter_for_an_unknown_projection_is_refused_by_name,
            a_reserved_read_model_table_name_is_refused,
            a_read_model_table_name_that_is_not_a_plain_identifier_is_refused,
            an_empty_projection_name_is_refused,
            a_claim_without_an_owner_is_refused,
            a_commit_whose_end_is_before_its_start_is_refused,
            a_commit_to_another_table_than_the_projections_is_refused,
            an_expected_version_below_zero_is_refused,
            an_append_without_events_is_refused,
            an_append_that_is_not_a_well_formed_event_is_refused,
            registering_with_another_partition_count_is_refused,
        );
        $crate::__store_tests!($attr $fresh tables:
            a_missing_read_model_table_needs_a_rebuild,
        );
        $crate::__store_tests!($attr $fresh reporting:
            lag_is_measured_from_when_the_store_recorded_the_events,
            a_recovered_partition_clears_its_last_error,
            lag_is_exact_within_the_bound_and_labelled_estimated_beyond,
        );
    };
    ($($fresh:tt)+) => {
        $crate::contract_tests!(@tests [tokio::test] { $($fresh)+ });
    };
}

/// One `#[tokio::test]` per check of the failure-handling suite ([`failures`],
/// [`replays`], [`stored_events`], [`crashes`], [`upcasting`] and [`windows`]); the
/// argument is as for [`contract_tests!`].
#[macro_export]
macro_rules! failure_tests {
    (flavor: multi_thread; $($fresh:tt)+) => {
        $crate::failure_tests!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] { $($fresh)+ });
    };
    (@tests $attr:tt $fresh:tt) => {
        $crate::__store_tests!($attr $fresh failures:
            a_permanent_failure_dead_letters_at_once_and_parks_only_its_aggregate,
            retry_after_the_fix_applies_the_parked_sequence_in_order,
            skip_drops_one_event_and_applies_the_rest,
            discard_drops_the_sequence_and_later_events_apply,
            a_repair_of_an_unknown_or_closed_letter_is_refused_clearly,
            stop_applies_nothing_after_the_failing_event,
            a_transient_failure_is_retried_then_dead_lettered_with_its_attempts,
            a_transient_failure_that_heals_applies_once_and_forgets_its_attempts,
            a_commit_with_dead_letters_parks_their_aggregates_and_moves_the_epoch,
            claim_returns_the_parked_set_of_its_partition_only,
            record_failure_counts_attempts_and_keeps_the_first_failure,
            the_queue_stores_lists_and_resolves_letters,
            begin_repair_finds_the_letter_its_parking_and_its_partition,
            a_repair_session_commits_everything_or_nothing,
        );
        $crate::__store_tests!($attr $fresh replays:
            a_rebuild_with_a_poison_event_equals_the_live_read_model,
            a_rebuild_keeps_skipped_and_discarded_events_out,
            a_rebuild_takes_out_what_a_failing_event_touched,
            time_travel_leaves_out_a_skipped_event,
        );
        $crate::__store_tests!($attr $fresh stored_events:
            a_version_gap_is_dead_lettered_after_its_timeout_and_skip_accepts_it,
            a_gap_filled_within_its_timeout_applies_everything_in_order,
            a_version_at_the_largest_bigint_is_a_gap_and_refuses_appends,
            an_oversized_stored_event_is_dead_lettered_with_its_size,
            a_rebuild_dead_letters_an_oversized_stored_event,
        );
        $crate::__store_tests!($attr $fresh crashes:
            a_claim_returns_the_batch_left_in_flight_and_a_commit_clears_it,
            one_event_in_flight_at_the_crash_limit_is_dead_lettered,
            a_batch_in_flight_at_the_crash_limit_is_halved,
        );
        $crate::__store_tests!($attr $fresh upcasting:
            events_stored_at_old_versions_fold_like_events_written_at_the_current_one,
            a_failing_upcaster_dead_letters_its_event_and_parks_only_its_aggregate,
            a_rebuild_dead_letters_an_event_that_does_not_upcast_like_live_processing,
            events_upcast_out_of_the_filter_are_passed_over,
        );
        $crate::__store_tests!($attr $fresh windows:
            a_far_behind_step_folds_a_window_and_near_the_head_commits_each_batch,
            a_failure_inside_a_window_commits_what_came_before_and_parks_only_its_aggregate,
        );
    };
    ($($fresh:tt)+) => {
        $crate::failure_tests!(@tests [tokio::test] { $($fresh)+ });
    };
}

/// One `#[tokio::test]` per check of the subject-key suite ([`keys`]); the argument is as
/// for [`contract_tests!`].
#[macro_export]
macro_rules! keys_tests {
    (flavor: multi_thread; $($fresh:tt)+) => {
        $crate::keys_tests!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] { $($fresh)+ });
    };
    (@tests $attr:tt $fresh:tt) => {
        $crate::__store_tests!($attr $fresh keys:
            provisioning_stores_one_key_and_returns_it_after,
            shredding_deletes_keys_and_fences_the_subject,
            rewrap_walks_every_key_once_and_compares_before_replacing,
            audit_rows_round_trip_and_bad_input_is_refused,
        );
    };
    ($($fresh:tt)+) => {
        $crate::keys_tests!(@tests [tokio::test] { $($fresh)+ });
    };
}

/// One test per check of the field-encryption suite ([`encryption`] and
/// [`encryption_failures`]), each on a fresh store; arguments as [`contract_tests!`].
#[macro_export]
macro_rules! encryption_tests {
    (flavor: multi_thread; $($fresh:tt)+) => {
        $crate::encryption_tests!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] { $($fresh)+ });
    };
    (@tests $attr:tt $fresh:tt) => {
        $crate::__store_tests!($attr $fresh encryption:
            only_a_granted_projection_sees_plaintext,
            a_repeated_sealed_append_is_recognised,
            rotation_keeps_data_readable_and_rewrap_moves_every_key,
            a_shredded_subject_reads_redacted_and_gets_no_new_key,
        );
        $crate::__store_tests!($attr $fresh encryption_failures:
            unreadable_fields_are_dead_lettered_and_park_only_their_aggregate,
        );
    };
    ($($fresh:tt)+) => {
        $crate::encryption_tests!(@tests [tokio::test] { $($fresh)+ });
    };
}

/// `#[$attr] async fn check() { <fresh store>; suite::check(&store).await }` per check.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_tests {
    ($attr:tt $fresh:tt $suite:ident: $($check:ident),+ $(,)?) => {$(
        #$attr
        async fn $check() {
            $crate::__fresh_store!($fresh store);
            $crate::$suite::$check(&store).await;
        }
    )+};
}

/// Binds `$name` to a fresh store, keeping the `let` bindings before it alive in the
/// caller's scope.
#[doc(hidden)]
#[macro_export]
macro_rules! __fresh_store {
    ({ $(let $bind:pat = $init:expr;)* $store:expr } $name:ident) => {
        $(let $bind = $init;)*
        let $name = $store;
    };
}

/// One `#[tokio::test]` per check of the eager-migration suite ([`migrations`]). The
/// argument is as for [`contract_tests!`], except that its last expression is a pair:
/// the store, and a [`dumps::RowDump`] that reads the same store's tables directly.
#[macro_export]
macro_rules! migration_tests {
    (flavor: multi_thread; $($fresh:tt)+) => {
        $crate::migration_tests!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] { $($fresh)+ });
    };
    (@tests $attr:tt $fresh:tt) => {
        $crate::__store_dump_tests!($attr $fresh migrations:
            a_plan_writes_nothing,
            apply_then_rollback_restores_every_row_byte_for_byte,
            a_rollback_waits_for_the_later_migrations,
            apply_then_a_rebuild_gives_the_read_model_of_lazy_upcasting,
            a_failing_upcaster_is_named_by_the_plan_and_apply_refuses,
            an_interrupted_apply_goes_on_and_rewrites_nothing_twice,
            an_event_committed_behind_the_cursor_is_picked_up_before_verification,
            a_chunk_is_written_whole_or_not_at_all,
            projections_running_across_a_migration_apply_every_event_once,
        );
    };
    ($($fresh:tt)+) => {
        $crate::migration_tests!(@tests [tokio::test] { $($fresh)+ });
    };
}

/// [`__store_tests!`] for checks that take the store and a [`dumps::RowDump`] of it.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_dump_tests {
    ($attr:tt $fresh:tt $suite:ident: $($check:ident),+ $(,)?) => {$(
        #$attr
        async fn $check() {
            $crate::__fresh_store!($fresh fixture);
            let (store, dump) = fixture;
            $crate::$suite::$check(&store, &dump).await;
        }
    )+};
}

/// One `#[tokio::test]` per check of the snapshot suite ([`snapshots`]); the argument is
/// as for [`contract_tests!`].
#[macro_export]
macro_rules! snapshot_tests {
    (flavor: multi_thread; $($fresh:tt)+) => {
        $crate::snapshot_tests!(@tests [tokio::test(flavor = "multi_thread", worker_threads = 2)] { $($fresh)+ });
    };
    (@tests $attr:tt $fresh:tt) => {
        $crate::__store_tests!($attr $fresh snapshots:
            time_travel_from_snapshots_equals_a_full_replay_at_random_instants,
            snapshots_are_kept_every_n_versions_by_batches_and_rebuilds,
            a_handler_version_other_chains_or_a_migration_make_snapshots_unused,
        );
    };
    ($($fresh:tt)+) => {
        $crate::snapshot_tests!(@tests [tokio::test] { $($fresh)+ });
    };
}
