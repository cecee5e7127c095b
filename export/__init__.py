"""fer_export: checkpoint -> validated ONNX model (+ int8 / fp16 variants).

Installed under the import name ``fer_export`` (the source folder is ``export/``).
"""

from fer_export.onnx_export import ExportError, ExportReport, export_onnx

__all__ = ["ExportError", "ExportReport", "export_onnx"]
