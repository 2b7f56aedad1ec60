"""Stage 3, export: a trained run → a single-file ONNX policy with its deployment contract."""

from pipeline.export.contract import CONTRACT_FILE, ONNX_FILE, Contract, ContractError, load_contract
from pipeline.export.export import export_run, write_model

__all__ = ["CONTRACT_FILE", "ONNX_FILE", "Contract", "ContractError", "export_run", "load_contract", "write_model"]
