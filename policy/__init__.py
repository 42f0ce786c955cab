"""Access model: users, targets, rules, requests, grants, locks. Depends on no sibling package."""
