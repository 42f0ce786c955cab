"""The compliance report: per grant who, what, when, why, approved by whom, and what they did
in each session; with whether the audit chain and the recordings verify."""
