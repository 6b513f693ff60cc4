"""What the Ray Data applications share (curation, ``sapiens2 predict --engine ray``): the optional Ray/pyarrow
imports and the connection to a Ray instance (:mod:`.ray_runtime`), listing inputs of every kind as rows that any
worker can read back (:mod:`.listing`), atomic Parquet tables (:mod:`.tables`) and the count-based commit budget
that simulates a crash after exactly k committed units (:mod:`.commits`)."""
from .commits import COMMIT_BUDGET_DIR, claim_commit, reset_commit_budget
from .ray_runtime import ExtraMissingError, connect_ray, require
from .tables import read_table_dict, write_table_atomic

__all__ = ["COMMIT_BUDGET_DIR", "ExtraMissingError", "claim_commit", "connect_ray", "read_table_dict", "require",
           "reset_commit_budget", "write_table_atomic"]
