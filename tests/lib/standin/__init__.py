"""The AWS stand-in behind dms_standin.py, one module per service."""
