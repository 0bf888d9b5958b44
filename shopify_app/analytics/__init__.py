"""Pure analytics: RFM, segments, association rules, CLV, clusters.

Rule: this package imports only the standard library, numpy, scipy, pandas, scikit-learn and mlxtend. No Flask,
Redis or SQLAlchemy, so every function is testable on plain data.
"""
