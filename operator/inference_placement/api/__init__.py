"""The InferenceWorkload API: pydantic models that are the single source of truth for the CRD.

Import each name from the module that defines it: ``spec`` (the desired state), ``status`` (the observed state),
``workload`` (the resource, its names and ``WorkloadKey``), ``validation`` (rules a schema cannot express),
``conditions`` (the condition set), ``quantity`` and ``timestamps`` (the two wire grammars).
"""
