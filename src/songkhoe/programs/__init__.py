"""Screening and chronic-care programmes: definitions as data, eligibility, classification,
risk scores, referrals, follow-up and worklists (issue 6). Sources are cited where each rule
is encoded; facts come from ``shared/reference/CLINICAL.md``."""
