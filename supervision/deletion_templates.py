# ruff: noqa: E501 - template lines are output lines (Markdown table rows, HTML)
"""Jinja2 templates of the monthly deletion report (supervision/deletion_report.py).

`r` is the DeletionReport; filters: time, duration, day (supervision/report.py), count and
seconds (an age in seconds). Kept as Python strings so that they ship inside the package.
"""

_PURGE_CELL = (
    "{% for p in d.purges %}{% if p.duration_ms is not none %}{{ p.start|clock }} to {% endif %}"
    "{{ p.at|clock }} {{ outcome(p) }}{% if not loop.last %}, {% endif %}"
    "{% else %}**no purge run**{% endfor %}"
)
_AUDIT_CELL = (
    "{% for a in d.audits %}{{ a.at|clock }} {{ outcome(a) }}"
    "{% if a.reported %}: {{ a.count('findings')|count }} finding(s){% endif %}"
    "{% if not loop.last %}; {% endif %}{% else %}—{% endfor %}"
)

REPORT_MD = (
    """\
# Deletion report: personal data of {{ contract.service }}

**Environment** {{ ctx.environment }} · **Period** {{ r.period.label }} · **Customer** {{ contract.customer }}

For the data-protection officer. Generated {{ r.generated_at|time }} by `deletion-report` from
Prometheus {{ r.prometheus_version }} ({{ r.prometheus_url }}). Definitions:
`docs/deletion-report.md`. Times are in {{ contract.timezone }}.
{% if r.warnings %}

> **Read first**
{% for w in r.warnings %}
> - {{ w }}
{% endfor %}
{% endif %}

## Verdict

**{{ r.verdict }}**

## Summary

| | |
|---|---|
| Period | {{ r.period.start|time }} to {{ r.period.end|time }} |
| Budget | no personal data older than {{ budget_days }} days in any copy (databases, backups); purge retention {{ ctx.retention.purge_retention_days }} days |
| Purge runs | {{ r.purges|length }}: {{ purge_successes }} succeeded, {{ r.purges|length - purge_successes }} failed |
| Days without a purge run | {% for d in r.days_without_purge %}{{ d|day }}{% if not loop.last %}, {% endif %}{% else %}none{% endfor %} |
| Documents purged | {{ documents|count }} |
| Revisions purged | {{ revisions|count }} |
| Databases whose purge failed | {{ databases_failed|count }} |
| Audits | {{ r.audits|length }}: {{ completed_audits|length }} completed, {{ r.audits|length - completed_audits|length }} failed; **{{ r.audits_with_findings|length }} with findings** |
{% for copy, o in oldest.items() %}
| Oldest personal data found readable in the {{ copy }} | {% if o %}{{ (o.age_ms / 1000)|seconds }} (audit ending {{ o.audit.at|time }}){% else %}no audit reported it{% endif %} |
{% endfor %}
| Backup expiry runs | {{ r.expiries|length }}: {{ expiry_successes }} succeeded, {{ r.expiries|length - expiry_successes }} failed; {{ backups_expired|count }} backups deleted |
| GDPR incidents | {{ r.incidents|length }} |

![Documents purged per day and oldest personal data found by the audits](deletions.png)

## When personal data past {{ budget_days }} days was or may have been readable

{% if r.exposures %}
| From | To | Copy | | Why |
|---|---|---|---|---|
{% for e in r.exposures %}
| {{ e.start|time }} | {{ e.end|time }} | {{ e.copy }} | {{ "**found**" if e.found else "not excluded" }} | {% if e.audit %}the audit ending {{ e.audit.at|time }} read data {{ (e.age_ms / 1000)|seconds }} old{% else %}{{ e.reason }}{% endif %} |
{% endfor %}
{% else %}
Never: every audit found the data within the budget, and the purge and the backup expiry never
fell far enough behind for any to pass it.
{% endif %}

## GDPR incidents

Periods where the condition of a GDPR alert held, evaluated every minute as the alerting rules are.

{% if r.incidents %}
| Alert | Severity | From | To | Duration | Detail |
|---|---|---|---|---|---|
{% for i in r.incidents %}
| {{ i.alert }} | {{ i.severity }} | {{ i.interval.start|time }}{{ " (or earlier)" if i.interval.cut_at_start else "" }} | {{ i.interval.end|time }}{{ " (still holding)" if i.interval.cut_at_end else "" }} | {{ i.interval.duration|duration }} | {{ i.detail }} |
{% endfor %}
{% else %}
None.
{% endif %}

## Per day

Purge runs by the day they ended (start to end, {{ contract.timezone }}); "—": no run of the day
reported the figure.

| Day | Purge | Documents purged | Revisions purged | Failed databases | Audits | Backups expired |
|---|---|---|---|---|---|---|
{% for d in r.days %}
| {{ d.day|day }} | """
    + _PURGE_CELL
    + """ | {{ d.documents|count }} | {{ d.revisions|count }} | {{ d.databases_failed|count }} | """
    + _AUDIT_CELL
    + """ | {{ d.backups_expired|count }} |
{% endfor %}

## Audits

| End | Outcome | Findings | Databases | Backups | Oldest in the databases | Oldest in the backups | Limit checked |
|---|---|---|---|---|---|---|---|
{% for a in r.audits %}
| {{ a.at|time }} | {{ outcome(a) }} | {{ a.count('findings')|count }} | {{ a.count('databases')|count }} | {{ a.count('backups')|count }} | {{ a.count('oldest_database_data_age_seconds')|seconds }} | {{ a.count('oldest_backup_data_age_seconds')|seconds }} | {{ a.count('cutoff_age_seconds')|seconds }} |
{% else %}
| no audit ran | | | | | | | |
{% endfor %}

## Backup expiry

{{ r.expiries|length }} runs of `couchops backup-expire`, {{ expiry_successes }} succeeded; {{ backups_expired|count }} expired backups deleted.
{% for e in r.expiries if e.success is sameas false %}
{% if loop.first %}

Failed runs:
{% endif %}
- {{ e.at|time }}
{% endfor %}

## Method

- Every figure comes from the gauges `couchops` pushes to the Pushgateway at the end of each
  run (`operation` = `purge`, `audit`, `backup-expire`). The Pushgateway serves a run's values
  until the next push, so a run is a change of `couchops_last_run_timestamp_seconds` (its value
  is the run's end, the time shown here) and its counts are the values first scraped with it.
  A failed run that pushed no counts is shown as "not reported" and counts 0.
- A day is a calendar day in {{ contract.timezone }}; a run belongs to the day it ended.
- **Found**: an audit read personal data older than {{ budget_days }} days in a copy; it was
  readable from when it passed {{ budget_days }} days until the next completed audit found
  that copy within the budget.
- **Not excluded**: a purge removes everything older than the {{ ctx.retention.purge_retention_days }}-day
  retention as of its start, so data can pass {{ budget_days }} days only once no successful
  purge started for {{ (budget_days - ctx.retention.purge_retention_days) * 24 }} h, until the next
  successful purge ends; backups, while no backup expiry succeeded for {{ ctx.backup_expire_max_age_hours }} h.
- Incidents: the alerts' own expressions (`supervision/rules.py`), evaluated every minute.
"""
)

REPORT_HTML = (
    """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Deletion report {{ ctx.environment }} {{ r.period.label }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.clean { color: #1e7e34; font-weight: bold; }
.breach { color: #c0392b; font-weight: bold; }
.warn { background: #fff4e5; border-left: 4px solid #e67e22; padding: 0.5em 1em; }
img { max-width: 100%; }
small { color: #666; }
</style>
</head>
<body>
<h1>Deletion report: personal data of {{ contract.service }}</h1>
<p><b>Environment</b> {{ ctx.environment }} · <b>Period</b> {{ r.period.label }} ·
<b>Customer</b> {{ contract.customer }}<br>
<small>For the data-protection officer. Generated {{ r.generated_at|time }} by deletion-report
from Prometheus {{ r.prometheus_version }} ({{ r.prometheus_url }}). Times in {{ contract.timezone }}.</small></p>
{% if r.warnings %}
<div class="warn"><b>Read first</b><ul>
{% for w in r.warnings %}<li>{{ w }}</li>{% endfor %}
</ul></div>
{% endif %}
<h2>Verdict</h2>
<p class="{{ 'clean' if not r.exposures else 'breach' }}">{{ r.verdict }}</p>
<h2>Summary</h2>
<table>
<tr><th>Period</th><td>{{ r.period.start|time }} to {{ r.period.end|time }}</td></tr>
<tr><th>Budget</th><td>no personal data older than {{ budget_days }} days in any copy; purge retention {{ ctx.retention.purge_retention_days }} days</td></tr>
<tr><th>Purge runs</th><td>{{ r.purges|length }}: {{ purge_successes }} succeeded, {{ r.purges|length - purge_successes }} failed</td></tr>
<tr><th>Days without a purge run</th><td>{% for d in r.days_without_purge %}{{ d|day }}{% if not loop.last %}, {% endif %}{% else %}none{% endfor %}</td></tr>
<tr><th>Documents purged</th><td>{{ documents|count }}</td></tr>
<tr><th>Revisions purged</th><td>{{ revisions|count }}</td></tr>
<tr><th>Databases whose purge failed</th><td>{{ databases_failed|count }}</td></tr>
<tr><th>Audits</th><td>{{ r.audits|length }}: {{ completed_audits|length }} completed; <b>{{ r.audits_with_findings|length }} with findings</b></td></tr>
{% for copy, o in oldest.items() %}
<tr><th>Oldest personal data found readable in the {{ copy }}</th><td>{% if o %}{{ (o.age_ms / 1000)|seconds }} (audit ending {{ o.audit.at|time }}){% else %}no audit reported it{% endif %}</td></tr>
{% endfor %}
<tr><th>Backup expiry runs</th><td>{{ r.expiries|length }}: {{ expiry_successes }} succeeded; {{ backups_expired|count }} backups deleted</td></tr>
<tr><th>GDPR incidents</th><td>{{ r.incidents|length }}</td></tr>
</table>
<img src="data:image/png;base64,{{ chart }}" alt="Documents purged per day and oldest personal data found by the audits">
<h2>When personal data past {{ budget_days }} days was or may have been readable</h2>
{% if r.exposures %}
<table><tr><th>From</th><th>To</th><th>Copy</th><th></th><th>Why</th></tr>
{% for e in r.exposures %}<tr><td>{{ e.start|time }}</td><td>{{ e.end|time }}</td><td>{{ e.copy }}</td>
<td class="{{ 'breach' if e.found else '' }}">{{ "found" if e.found else "not excluded" }}</td>
<td>{% if e.audit %}the audit ending {{ e.audit.at|time }} read data {{ (e.age_ms / 1000)|seconds }} old{% else %}{{ e.reason }}{% endif %}</td></tr>
{% endfor %}</table>
{% else %}
<p>Never.</p>
{% endif %}
<h2>GDPR incidents</h2>
{% if r.incidents %}
<table><tr><th>Alert</th><th>Severity</th><th>From</th><th>To</th><th>Duration</th><th>Detail</th></tr>
{% for i in r.incidents %}<tr><td>{{ i.alert }}</td><td>{{ i.severity }}</td><td>{{ i.interval.start|time }}</td>
<td>{{ i.interval.end|time }}{{ " (still holding)" if i.interval.cut_at_end else "" }}</td><td>{{ i.interval.duration|duration }}</td><td>{{ i.detail }}</td></tr>
{% endfor %}</table>
{% else %}
<p>None.</p>
{% endif %}
<h2>Per day</h2>
<table><tr><th>Day</th><th>Purge</th><th>Documents purged</th><th>Revisions purged</th><th>Failed databases</th><th>Audit</th><th>Backups expired</th></tr>
{% for d in r.days %}<tr><td>{{ d.day|day }}</td><td>"""
    + _PURGE_CELL.replace("**no purge run**", "<b>no purge run</b>")
    + """</td><td>{{ d.documents|count }}</td><td>{{ d.revisions|count }}</td><td>{{ d.databases_failed|count }}</td><td>"""
    + _AUDIT_CELL
    + """</td><td>{{ d.backups_expired|count }}</td></tr>
{% endfor %}</table>
<h2>Audits</h2>
<table><tr><th>End</th><th>Outcome</th><th>Findings</th><th>Oldest in the databases</th><th>Oldest in the backups</th><th>Limit checked</th></tr>
{% for a in r.audits %}<tr><td>{{ a.at|time }}</td><td>{{ outcome(a) }}</td><td>{{ a.count('findings')|count }}</td>
<td>{{ a.count('oldest_database_data_age_seconds')|seconds }}</td><td>{{ a.count('oldest_backup_data_age_seconds')|seconds }}</td><td>{{ a.count('cutoff_age_seconds')|seconds }}</td></tr>
{% endfor %}</table>
<h2>Method</h2>
<p>Figures come from the gauges couchops pushes to the Pushgateway at the end of each run; a
run is a change of <code>couchops_last_run_timestamp_seconds</code>, its counts the values
first scraped with it (a failed run that pushed none: "not reported", counted 0). Days are
calendar days in {{ contract.timezone }}. "Found": an audit read data older than
{{ budget_days }} days. "Not excluded": no successful purge started for
{{ (budget_days - ctx.retention.purge_retention_days) * 24 }} h, or no successful backup
expiry for {{ ctx.backup_expire_max_age_hours }} h. Incidents: the alerts' own expressions,
evaluated every minute. See docs/deletion-report.md.</p>
</body>
</html>
"""
)
