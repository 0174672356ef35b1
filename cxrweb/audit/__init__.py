"""The audit trail, an app of its own: who did what to which record, when and from where.

Its model (AuditEvent) keeps the table it had in the diagnosis app. Record events with
`cxrweb.audit.services.audit`; `manage.py verify_audit` checks the hash chain (chain.py).
Nothing here imports the diagnosis or training apps: a record names its patient through an
`audit_patient_mrn` property.
"""
