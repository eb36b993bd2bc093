"""Operations tooling for the onboarding platform's CouchDB cluster.

Runs inside the platform's Jobs and CronJobs and at an operator's shell; it knows nothing of
Pulumi and reads its settings from environment variables and mounted secret files only.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
