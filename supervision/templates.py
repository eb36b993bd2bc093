# ruff: noqa: E501 - template lines are output lines (Markdown table rows, HTML)
"""Jinja2 templates of the SLA report and of the pre-filled incident report.

Kept as Python strings so that they ship inside the package (no package-data to declare).
`r` is the SlaReport, `f` its Availability figures; filters: time, duration, percent, day,
money (see supervision/report.py).
"""

_MISSING_DATA = (
    "{% if f.missing_data == 'unavailable' %}counted as unavailable"
    "{% elif f.missing_data == 'excluded' %}left out (availability over measured time)"
    "{% else %}counted as available{% endif %}"
)

_TTD = (
    "{% set ttd = v.first_page.start - v.incident.start %}"
    "{{ v.first_page.name }} at {{ v.first_page.start|time }} "
    "({% if ttd < 0 %}{{ (-ttd)|duration }} before{% else %}{{ ttd|duration }} after{% endif %}"
    " the first failed probe)"
)

REPORT_MD = (
    """\
# SLA report: {{ contract.service }}

**Environment** {{ ctx.environment }} · **Period** {{ r.period.label }} · **Customer** {{ contract.customer }}

Generated {{ r.generated_at|time }} by `sla-report` from Prometheus {{ r.prometheus_version }}
({{ r.prometheus_url }}). Definitions: `docs/sla.md`. Times are in {{ contract.timezone }}.
{% if r.warnings %}

> **Read first**
{% for w in r.warnings %}
> - {{ w }}
{% endfor %}
{% endif %}

## Summary

| | |
|---|---|
| Period | {{ r.period.start|time }} to {{ r.period.end|time }} ({{ f.period_ms|duration }}) |
| Availability | **{{ f.ratio|percent }}** (target {{ f.target|percent(1) }}) |
| SLA | **{{ "met" if f.met else "MISSED" }}** |
| Unavailable (probe failed) | {{ f.down_ms|duration }} |
| Without data | {{ f.no_data_ms|duration }}, """
    + _MISSING_DATA
    + """ |
| Counted as unavailable | {{ f.counted_unavailable_ms|duration }} |
| Error budget of the period | {{ f.budget_ms|duration }} ({{ (1 - f.target)|percent(1) }} of {{ f.reference_ms|duration }}) |
| Error budget spent | {{ "%.1f"|format(f.budget_spent * 100) }} % (remaining {{ budget_remaining_ms|duration }}) |
| Incidents | {{ r.incidents|length }} |
{% set tier = contract.penalty_tier(f.ratio) %}
| Penalty | {% if tier %}availability below {{ tier.below|percent(1) }}: {{ tier.percent_of_monthly_fee }} % of the monthly fee{% if not r.period.calendar_month %} (prorated to the period){% endif %} = **{{ r.penalty_amount|money }} {{ contract.currency }}**{% else %}none{% endif %} |

![Unavailable minutes per day and error budget spent](availability.png)

## Incidents

{% if r.incidents %}
| # | Id | Start | End | Duration | Down time | First page (time to detect) | Report due |
|---|---|---|---|---|---|---|---|
{% for v in r.incidents %}
| {{ v.number }} | [{{ v.id }}](incident-{{ v.number }}.md) | {{ v.incident.start|time }}{{ " (cut at the period start)" if v.incident.cut_at_start else "" }} | {{ v.incident.end|time }}{{ " (ongoing at the period end)" if v.incident.cut_at_end else "" }} | {{ v.incident.duration|duration }} | {{ v.incident.down_ms|duration }} | {% if v.first_page %}"""
    + _TTD
    + """{% else %}none{% endif %} | {{ v.report_due|time }}{{ " (overdue)" if v.report_due < r.generated_at else "" }} |
{% endfor %}
{% else %}
No incident in the period{% if contract.incident_min_duration_seconds %} (down time shorter than {{ (contract.incident_min_duration_seconds * 1000)|duration }} is counted above but not reported as an incident){% endif %}.
{% endif %}

## Time without data

{% if r.no_data %}
| Start | End | Duration |
|---|---|---|
{% for s in r.no_data %}
| {{ s.start|time }} | {{ s.end|time }} | {{ s.duration|duration }} |
{% endfor %}
{% else %}
Every moment of the period is covered by a probe result.
{% endif %}

## Alert timeline

{% if r.alerts %}
| Firing from | Resolved | Alert | Severity |
|---|---|---|---|
{% for a in r.alerts %}
| {{ a.start|time }} | {{ a.resolved|time if a.resolved else "still firing at the period end" }} | {{ a.name }} | {{ a.severity }} |
{% endfor %}
{% else %}
No alert of this environment fired in the period.
{% endif %}

## Unavailable time per day

| Day | Down | Without data |
|---|---|---|
{% for d in r.days if d.down_ms or d.no_data_ms %}
| {{ d.day|day }} | {{ d.down_ms|duration }} | {{ d.no_data_ms|duration }} |
{% else %}
| every day | 0 s | 0 s |
{% endfor %}

## Method

- SLI: the blackbox probe of {{ ctx.public_url }} (`{{ r.probe_selector }}`), every
  {{ interval }}. A probe succeeds on a valid TLS handshake and a 2xx answer within its timeout.
- Each probe result stands for the time until the next one (up to two intervals); time
  covered by no result is "without data", {{ "" }}"""
    + _MISSING_DATA
    + """ (contract: `missing_data: {{ f.missing_data }}`).
- Availability = 1 - counted unavailable time / {{ "measured time" if f.missing_data == "excluded" else "period length" }}.
  Error budget = (1 - target) x the same length: 43.2 minutes per 30 days at 99.9 %.
- An incident is a run of failed probes, from the first failed probe to the first
  successful one; runs less than {{ (contract.incident_merge_gap_seconds * 1000)|duration }} apart are one incident.
- The incident report is due {{ contract.incident_report_delay_hours }} h after the incident's start.
"""
)

REPORT_HTML = (
    """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>SLA report {{ ctx.environment }} {{ r.period.label }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.met { color: #1e7e34; font-weight: bold; }
.missed { color: #c0392b; font-weight: bold; }
.warn { background: #fff4e5; border-left: 4px solid #e67e22; padding: 0.5em 1em; }
img { max-width: 100%; }
small { color: #666; }
</style>
</head>
<body>
<h1>SLA report: {{ contract.service }}</h1>
<p><b>Environment</b> {{ ctx.environment }} · <b>Period</b> {{ r.period.label }} ·
<b>Customer</b> {{ contract.customer }}<br>
<small>Generated {{ r.generated_at|time }} by sla-report from Prometheus
{{ r.prometheus_version }} ({{ r.prometheus_url }}). Times in {{ contract.timezone }}.</small></p>
{% if r.warnings %}
<div class="warn"><b>Read first</b><ul>
{% for w in r.warnings %}<li>{{ w }}</li>{% endfor %}
</ul></div>
{% endif %}
<h2>Summary</h2>
<table>
<tr><th>Period</th><td>{{ r.period.start|time }} to {{ r.period.end|time }} ({{ f.period_ms|duration }})</td></tr>
<tr><th>Availability</th><td><b>{{ f.ratio|percent }}</b> (target {{ f.target|percent(1) }})</td></tr>
<tr><th>SLA</th><td class="{{ 'met' if f.met else 'missed' }}">{{ "met" if f.met else "MISSED" }}</td></tr>
<tr><th>Unavailable (probe failed)</th><td>{{ f.down_ms|duration }}</td></tr>
<tr><th>Without data</th><td>{{ f.no_data_ms|duration }}, """
    + _MISSING_DATA
    + """</td></tr>
<tr><th>Counted as unavailable</th><td>{{ f.counted_unavailable_ms|duration }}</td></tr>
<tr><th>Error budget of the period</th><td>{{ f.budget_ms|duration }}</td></tr>
<tr><th>Error budget spent</th><td>{{ "%.1f"|format(f.budget_spent * 100) }} % (remaining {{ budget_remaining_ms|duration }})</td></tr>
<tr><th>Incidents</th><td>{{ r.incidents|length }}</td></tr>
{% set tier = contract.penalty_tier(f.ratio) %}
<tr><th>Penalty</th><td>{% if tier %}availability below {{ tier.below|percent(1) }}: {{ tier.percent_of_monthly_fee }} % of the monthly fee = <b>{{ r.penalty_amount|money }} {{ contract.currency }}</b>{% else %}none{% endif %}</td></tr>
</table>
<img src="data:image/png;base64,{{ chart }}" alt="Unavailable minutes per day and error budget spent">
<h2>Incidents</h2>
{% if r.incidents %}
<table>
<tr><th>#</th><th>Id</th><th>Start</th><th>End</th><th>Duration</th><th>Down time</th><th>First page</th><th>Report due</th></tr>
{% for v in r.incidents %}
<tr><td>{{ v.number }}</td><td><a href="incident-{{ v.number }}.md">{{ v.id }}</a></td>
<td>{{ v.incident.start|time }}{{ " (cut at the period start)" if v.incident.cut_at_start else "" }}</td>
<td>{{ v.incident.end|time }}{{ " (ongoing at the period end)" if v.incident.cut_at_end else "" }}</td>
<td>{{ v.incident.duration|duration }}</td><td>{{ v.incident.down_ms|duration }}</td>
<td>{% if v.first_page %}"""
    + _TTD
    + """{% else %}none{% endif %}</td><td>{{ v.report_due|time }}{{ " (overdue)" if v.report_due < r.generated_at else "" }}</td></tr>
{% endfor %}
</table>
{% else %}
<p>No incident in the period.</p>
{% endif %}
<h2>Time without data</h2>
{% if r.no_data %}
<table><tr><th>Start</th><th>End</th><th>Duration</th></tr>
{% for s in r.no_data %}<tr><td>{{ s.start|time }}</td><td>{{ s.end|time }}</td><td>{{ s.duration|duration }}</td></tr>
{% endfor %}</table>
{% else %}
<p>Every moment of the period is covered by a probe result.</p>
{% endif %}
<h2>Alert timeline</h2>
{% if r.alerts %}
<table><tr><th>Firing from</th><th>Resolved</th><th>Alert</th><th>Severity</th></tr>
{% for a in r.alerts %}<tr><td>{{ a.start|time }}</td><td>{{ a.resolved|time if a.resolved else "still firing at the period end" }}</td><td>{{ a.name }}</td><td>{{ a.severity }}</td></tr>
{% endfor %}</table>
{% else %}
<p>No alert of this environment fired in the period.</p>
{% endif %}
<h2>Method</h2>
<p>SLI: the blackbox probe of {{ ctx.public_url }} (<code>{{ r.probe_selector }}</code>), every
{{ interval }}. Each result stands for the time until the next one (up to two intervals);
time covered by no result is without data. Availability = 1 - counted unavailable time /
{{ "measured time" if f.missing_data == "excluded" else "period length" }}. An incident runs
from the first failed probe to the first successful one; runs less than
{{ (contract.incident_merge_gap_seconds * 1000)|duration }} apart are one incident. See
docs/sla.md.</p>
</body>
</html>
"""
)

INCIDENT_MD = (
    """\
# Incident report {{ v.id }}: {{ contract.service }} unavailable

> **DRAFT** pre-filled by `sla-report` from Prometheus on {{ r.generated_at|time }}.
> Complete every _to complete_ before sending it to {{ contract.customer }}.

| | |
|---|---|
| Environment | {{ ctx.environment }} ({{ ctx.public_url }}) |
| Status | {{ "ongoing at the end of the reported period" if v.incident.cut_at_end else "resolved (as measured by the probe)" }} |
| Start | {{ v.incident.start|time }} (first failed probe){{ ", or earlier: the period starts there" if v.incident.cut_at_start else "" }} |
| End | {{ v.incident.end|time }}{{ " (period end)" if v.incident.cut_at_end else " (first successful probe)" }} |
| Duration | {{ v.incident.duration|duration }} |
| Down time counted for the SLA | {{ v.incident.down_ms|duration }} |
| Error budget of the period used by this incident | {{ "%.1f"|format(100 * v.incident.down_ms / f.budget_ms) }} % |
| Availability of the period | {{ f.ratio|percent }} (target {{ f.target|percent(1) }}, SLA {{ "met" if f.met else "MISSED" }}) |
| **SLA clock: report due** | **{{ v.report_due|time }}** ({{ contract.incident_report_delay_hours }} h after the start){{ ", OVERDUE at generation" if v.report_due < r.generated_at else "" }} |
| Incident lead | _to complete_ |

## Summary

The public onboarding site {{ ctx.public_url }} was unavailable from {{ v.incident.start|time }}
to {{ v.incident.end|time }} ({{ v.incident.duration|duration }}), as measured by the external
probe every {{ interval }}{% if v.incident.down_ms < v.incident.duration %}; it was down for
{{ v.incident.down_ms|duration }} of that time, in several stretches{% endif %}.

_To complete: what happened, in two or three sentences a bank reader understands._

## Impact

- Prospects could not open an account online for {{ v.incident.down_ms|duration }}; journeys
  in progress may have been lost.
- Users or applications affected: _to complete (web app logs, analytics)_.
- Error budget: this incident used {{ "%.1f"|format(100 * v.incident.down_ms / f.budget_ms) }} %
  of the period's budget ({{ f.budget_ms|duration }}).
- **Personal data exposed: unknown, to confirm** (yes / no; if yes: what, how many people,
  when the DPO was told, and the GDPR notification deadline of 72 h from awareness).

## Timeline ({{ contract.timezone }})

| Time | Event | Source |
|---|---|---|
{% for at, event, source in timeline[v.number] %}
| {{ at|time }} | {{ event }} | {{ source }} |
{% endfor %}
| _to complete_ | Page acknowledged by | on-call tool |
| _to complete_ | Cause identified | |
| _to complete_ | Mitigation applied | |

## Detection

{% if v.first_page %}
- First paging alert: """
    + _TTD
    + """.
{% else %}
- **No paging alert fired** for this incident: add a detection action item.
{% endif %}
{% for a in v.alerts %}
- {{ a.name }} ({{ a.severity }}): firing {{ a.start|time }}{% if a.resolved %}, resolved {{ a.resolved|time }}{% endif %}.
{% else %}
- No alert of this environment fired around the incident.
{% endfor %}

## Resolution

- Service restored at {{ v.incident.end|time }}, {{ v.incident.duration|duration }} after the first failed probe.
- What restored it: _to complete_.

## Root causes

_To complete._

## Trigger

_To complete._

## Lessons learned

- What went well: _to complete_
- What went wrong: _to complete_
- Where we were lucky: _to complete_

## Action items

| # | Action | Type (prevent / mitigate / detect / process) | Owner | Due | Status |
|---|---|---|---|---|---|
| 1 | _to complete_ | | | | open |
| 2 | _to complete_ | | | | open |
"""
)
