// Command cron-vectors records how the Kubernetes 1.34 CronJob controller times a schedule.
//
// The controller (k8s.io/kubernetes v1.34.2, pkg/controller/cronjob) parses
// "TZ=<spec.timeZone> <spec.schedule>" with cron.ParseStandard (cronjob_controllerv2.go,
// formatSchedule and syncCronJob) and finds each run with schedule.Next(status.lastScheduleTime)
// (utils.go, mostRecentScheduleTime). lastScheduleTime is a metav1.Time: whole seconds, UTC once
// stored. This program does the same with the same library and prints JSON on stdout: for each
// case the run times in UTC and in the zone, and for each expression of parseCases whether
// ParseStandard accepts it.
//
// Regenerate the vectors (from this directory):
//
//	go run . > ../../tests/unit/infra/vectors/robfig_cron_v3.0.1.json
package main

import (
	"encoding/json"
	"os"
	"time"
	// The controller-manager embeds the zone database (cmd/kube-controller-manager), so do we:
	// a machine without /usr/share/zoneinfo still gives the same answers.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"
)

type runCase struct {
	Why        string `json:"why"`
	Expression string `json:"expression"`
	TimeZone   string `json:"timeZone"`
	// The time the first Next is asked from, in RFC 3339 (as the controller's lastScheduleTime).
	Start string `json:"start"`
	Count int    `json:"count"`
}

type run struct {
	UTC   string `json:"utc"`
	Local string `json:"local"`
}

type runResult struct {
	runCase
	Runs []run `json:"runs"`
}

type parseResult struct {
	Expression string  `json:"expression"`
	Error      *string `json:"error"`
}

type output struct {
	Generator string        `json:"generator"`
	Library   string        `json:"library"`
	Runs      []runResult   `json:"runs"`
	Parse     []parseResult `json:"parse"`
}

const paris = "Europe/Paris"

// The real daylight-saving changes of Europe/Paris: 2027-03-28 and 2028-03-26 at 02:00 CET the
// clocks go to 03:00 CEST (02:xx does not exist); 2027-10-31 and 2028-10-29 at 03:00 CEST they go
// back to 02:00 CET (02:xx happens twice).
var changes = []struct{ spring, days string }{
	{"2027-03-25T00:00:00+01:00", "2027 spring forward"},
	{"2027-10-28T00:00:00+02:00", "2027 fall back"},
	{"2028-03-23T00:00:00+01:00", "2028 spring forward"},
	{"2028-10-26T00:00:00+02:00", "2028 fall back"},
}

func runCases() []runCase {
	var cases []runCase
	daily := []struct{ expr, why string }{
		{"30 2 * * *", "daily in the hour that is skipped in spring and repeated in autumn"},
		{"30 3 * * *", "daily at 03:30, which exists once every day"},
		{"15 1 * * *", "daily at 01:15, before any change"},
		{"0 2 * * *", "daily at the very start of the changing hour"},
		{"59 1 * * *", "daily one minute before the change"},
	}
	for _, change := range changes {
		for _, d := range daily {
			cases = append(cases, runCase{d.why + ", " + change.days, d.expr, paris, change.spring, 8})
		}
		// Start the evening before the change for the sub-daily schedules.
		start, _ := time.Parse(time.RFC3339, change.spring)
		evening := start.Add(3*24*time.Hour - 3*time.Hour).Format(time.RFC3339)
		cases = append(cases,
			runCase{"hourly, " + change.days, "0 * * * *", paris, evening, 10},
			runCase{"hourly at :07 (the backup expiry), " + change.days, "7 * * * *", paris, evening, 10},
			runCase{"every 15 minutes, " + change.days, "*/15 * * * *", paris, evening, 32},
			runCase{"every 15 minutes of hour 2, " + change.days, "*/15 2 * * *", paris, evening, 10},
			runCase{"weekly on Sunday at 02:30, " + change.days, "30 2 * * 0", paris, change.spring, 3},
			runCase{"weekly on Sunday at 09:00 (the verify drill), " + change.days, "0 9 * * 0", paris, change.spring, 3},
			runCase{"weekdays at 03:00, " + change.days, "0 3 * * 1-5", paris, change.spring, 6},
		)
	}
	cases = append(cases,
		// Asked from inside the repeated hour: once from its first pass (CEST), once from its
		// second (CET); and with an hour that does not match, which makes Next reset the
		// hour with time.Date.
		runCase{"from the first 02:40 of 2027-10-31", "30 2 * * *", paris, "2027-10-31T02:40:00+02:00", 3},
		runCase{"from the second 02:40 of 2027-10-31", "30 2 * * *", paris, "2027-10-31T02:40:00+01:00", 3},
		runCase{"03:00 from the first 02:10 of 2027-10-31", "0 3 * * *", paris, "2027-10-31T02:10:00+02:00", 2},
		runCase{"03:00 from the second 02:10 of 2027-10-31", "0 3 * * *", paris, "2027-10-31T02:10:00+01:00", 2},
		runCase{"02:30 and 03:30 over 2028-10-29", "30 2,3 * * *", paris, "2028-10-28T12:00:00+02:00", 5},
		runCase{"from the last second before 2027-03-28's change", "*/15 * * * *", paris, "2027-03-28T01:59:59+01:00", 3},
		runCase{"from an instant with a fraction of a second", "*/15 * * * *", paris, "2027-06-01T10:14:59.999+02:00", 2},
		runCase{"monthly on the 1st", "0 0 1 * *", paris, "2027-01-01T00:00:00+01:00", 14},
		runCase{"the 31st: months without one are passed", "0 12 31 * *", paris, "2027-01-15T00:00:00+01:00", 8},
		runCase{"31 February never comes: Next answers the zero time", "0 0 31 2 *", paris, "2027-01-01T00:00:00+01:00", 2},
		runCase{"29 February only", "0 0 29 2 *", paris, "2027-01-01T00:00:00+01:00", 2},
		runCase{"day of month or day of week when both are restricted", "0 12 1 * 1", paris, "2027-03-01T00:00:00+01:00", 8},
		runCase{"day of week */1 keeps the star: days 1-7 and any weekday", "0 12 1-7 * */1", paris, "2027-03-01T00:00:00+01:00", 9},
		runCase{"day of week */2 loses the star: days 1-7 or Sun/Tue/Thu/Sat", "0 12 1-7 * */2", paris, "2027-03-01T00:00:00+01:00", 12},
		runCase{"names, in any case", "0 6 * jan-MAR Mon-fri", paris, "2027-03-30T00:00:00+02:00", 5},
		runCase{"N/step runs from N to the end of the range", "5/20 * * * *", paris, "2027-05-01T00:00:00+02:00", 6},
		runCase{"New York spring forward (2027-03-14)", "30 2 * * *", "America/New_York", "2027-03-12T00:00:00-05:00", 4},
		runCase{"New York fall back (2027-11-07)", "30 1 * * *", "America/New_York", "2027-11-05T00:00:00-04:00", 5},
		runCase{"Lord Howe's half-hour change back (2027-04-04)", "15,45 * * * *", "Australia/Lord_Howe", "2027-04-04T00:00:00+11:00", 8},
		runCase{"Lord Howe's half-hour change forward (2027-10-03)", "15,45 * * * *", "Australia/Lord_Howe", "2027-10-03T00:00:00+10:30", 8},
		runCase{"UTC, hourly", "0 * * * *", "UTC", "2027-03-28T00:30:00Z", 3},
	)
	return cases
}

var parseCases = []string{
	"30 3 * * *", "*/15 * * * *", "0 0 * * 7", "0 0 * * SUN", "*-5 * * * *", "1,,2 * * * *",
	"60 * * * *", "+5 * * * *", "0 0 31 2 *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *",
	"5-1 * * * *", "*/0 * * * *", "1-2-3 * * * *", "1/2/3 * * * *", "a * * * *", "0 0 * * * *",
	"0 0 * *", "@daily", "0 0 ? * ?", "05 03 * * *", "0 0 1-31/10 * *", "0 0 * * fri-mon",
}

func main() {
	out := output{
		Generator: "scripts/cron-vectors (go run .)",
		Library:   "github.com/robfig/cron/v3 v3.0.1, cron.ParseStandard(\"TZ=<zone> <schedule>\") and SpecSchedule.Next",
	}
	for _, c := range runCases() {
		sched, err := cron.ParseStandard("TZ=" + c.TimeZone + " " + c.Expression)
		if err != nil {
			panic(err)
		}
		loc, err := time.LoadLocation(c.TimeZone)
		if err != nil {
			panic(err)
		}
		t, err := time.Parse(time.RFC3339Nano, c.Start)
		if err != nil {
			panic(err)
		}
		result := runResult{runCase: c, Runs: []run{}}
		for i := 0; i < c.Count; i++ {
			t = sched.Next(t)
			if t.IsZero() {
				break
			}
			// What status.lastScheduleTime keeps of it.
			t = t.UTC().Truncate(time.Second)
			result.Runs = append(result.Runs, run{t.Format(time.RFC3339), t.In(loc).Format(time.RFC3339)})
		}
		out.Runs = append(out.Runs, result)
	}
	for _, expression := range parseCases {
		result := parseResult{Expression: expression}
		if _, err := cron.ParseStandard("TZ=" + paris + " " + expression); err != nil {
			message := err.Error()
			result.Error = &message
		}
		out.Parse = append(out.Parse, result)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(out); err != nil {
		panic(err)
	}
}
