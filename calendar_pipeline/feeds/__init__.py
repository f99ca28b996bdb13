"""The calendar feeds: what the pipeline watches, as iCalendar files people subscribe to.

    feeds/build.py    pure: each event's feed record from day to day (stable UID, SEQUENCE,
                      cancellations kept for a while) and the iCalendar text of a feed
    feeds/publish.py  the files under `{data_dir}/feeds/`: `all.ics`, one `.ics` per Slack
                      channel and `state.json`, written atomically under a lock
    feeds/serve.py    `calendar-pipeline serve-feeds`: the `.ics` files over HTTP,
                      read-only, with ETag / Last-Modified and 304 answers

The Dagster asset that runs them is `calendar_feed` (defs/calendar_feed.py).
"""
