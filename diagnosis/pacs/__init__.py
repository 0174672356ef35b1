"""Results back out to the PACS as DICOM: the Django-free part.

- ``build``: a Comprehensive SR (TID 2000-style: a diagnostic imaging report with the model's
  findings) and a Secondary Capture of the Grad-CAM overlay, with highdicom, from plain data;
- ``send``: STOW-RS (DICOMweb) or C-STORE (pynetdicom) to the configured PACS, with transient
  errors (worth a retry) told apart from permanent ones.

The rows that record each send (``PacsExport``) and the task around them are the Django side:
``diagnosis.services.pacs`` (what to send, when) and ``diagnosis.worker.pacs`` (sending it).
"""
