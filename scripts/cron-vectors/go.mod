// Prints the run times that github.com/robfig/cron/v3 v3.0.1 (the version k8s.io/kubernetes
// v1.34.2 requires) gives a CronJob's schedule in its time zone, as the recorded vectors of
// tests/unit/infra/test_schedules.py. Run: `go run . > ../../tests/unit/infra/vectors/robfig_cron_v3.0.1.json`.
module onboarding.local/scripts/cron-vectors

go 1.22

require github.com/robfig/cron/v3 v3.0.1
