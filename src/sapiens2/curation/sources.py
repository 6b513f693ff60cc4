"""The inputs of a curation run: the shared listing of :mod:`sapiens2.cluster.listing` (files, folders, ``.txt``
lists, tar shards, URIs), under the names curation has always used."""
from sapiens2.cluster.listing import InputListError, is_uri, list_inputs, make_uid, read_item_bytes, read_sidecar

CurationInputError = InputListError  # the name curation's callers catch

__all__ = ["CurationInputError", "list_inputs", "read_item_bytes", "read_sidecar", "make_uid", "is_uri"]
