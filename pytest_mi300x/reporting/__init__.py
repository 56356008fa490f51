"""What people read: the end-of-session tables, report.md and report.html with their plots,
the merge of a fleet's result folders, and how each test ended (outcomes.py)."""
