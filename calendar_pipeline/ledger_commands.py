"""`calendar-pipeline deliveries` and `calendar-pipeline resend`: the ledger of a day, and
sending chosen alerts of that day again, without SQL and without files in the checkout.

    calendar-pipeline deliveries --date 2026-11-19      # what D's alerts became
    calendar-pipeline resend --date 2026-11-19 --key 'country-US|thanksgiving-day-2026|…'
    calendar-pipeline resend --date 2026-11-19 --entity country-US --dry-run

`resend` removes the chosen alerts' ledger rows, then runs `slack_alert_job` for D in
mode `send`, restricted to those keys (its `keys` config): the same exactly-once path as
the daily run, so each is posted once and recorded again. The run is recorded in the
Dagster instance at DAGSTER_HOME, as `calendar-pipeline run`'s are.
"""

from __future__ import annotations

import datetime as dt
import json

from calendar_pipeline.alerts import ledger_view
from calendar_pipeline.instance import cli_instance, root_causes


def deliveries(day: dt.date, as_json: bool) -> int:
    from calendar_pipeline.defs.resources import check_environment

    resources = check_environment()
    found = ledger_view.day_deliveries(resources["calendar"].engine(), day)
    if as_json:
        print(json.dumps([d.as_dict() for d in found], indent=2))
    else:
        print(ledger_view.render(found, day, resources["slack"].channel))
    return 0


def resend(
    day: dt.date, keys: list[str], entities: list[str], events: list[str], dry_run: bool
) -> int:
    """Exit 0 when every chosen alert is sent again, 1 when the Slack run failed, 2 for a
    choice that picks nothing (ledger_view.SelectionError, raised before any change)."""
    from calendar_pipeline.definitions import defs
    from calendar_pipeline.defs.resources import check_environment

    resources = check_environment()
    calendar, slack = resources["calendar"], resources["slack"]
    engine = calendar.engine()
    chosen = ledger_view.choose(
        ledger_view.day_deliveries(engine, day), day, keys=keys, entities=entities, events=events
    )
    print(f"re-sending {len(chosen)} alert(s) of {day}:")
    for d in chosen:
        print(f"  {d.dedup_key} ({d.state}{', ts ' + d.slack_ts if d.slack_ts else ''})")
    if dry_run:
        print("--dry-run: nothing changed")
        return 0
    if not slack.can_post:
        raise ledger_view.SelectionError(
            "resend posts to Slack: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL (nothing changed)"
        )
    chosen_keys = [d.dedup_key for d in chosen]
    removed = ledger_view.forget(engine, chosen_keys)
    print(f"removed {removed} ledger row(s); posting through slack_alert_job")
    config = {"ops": {"send_slack_alerts": {"config": {"mode": "send", "keys": chosen_keys}}}}
    logs = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with cli_instance() as instance:
        result = defs.resolve_job_def("slack_alert_job").execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            run_config={**config, **logs},
            tags={"calendar/resend": "true"},
            raise_on_error=False,
        )
    after = {d.dedup_key: d for d in ledger_view.day_deliveries(engine, day)}
    for key in chosen_keys:
        d = after[key]
        print(f"  {key}: {d.state}{', ts ' + d.slack_ts if d.slack_ts else ''}")
    if not result.success:
        for cause in root_causes(result):
            print(f"calendar-pipeline: {cause}")
        print(f"the Slack run {result.run_id} failed; the keys not sent stay undelivered")
        return 1
    sent = sum(1 for key in chosen_keys if after[key].state == "sent")
    print(f"Done: {sent} of {len(chosen_keys)} alert(s) of {day} sent again (run {result.run_id}).")
    return 0 if sent == len(chosen_keys) else 1
