"""A shared box (issue 17): named client keys with limits and budgets, the usage ledger, and
the status page. ``service.Accounts`` ties them together for the app."""
