"""Stage 3, export: a trained run → a single-file ONNX policy with its deployment contract.

The contract (``pipeline.export.contract``) is light and is what the gate and the robot side read;
the exporter itself (``pipeline.export.export``: ``export_run``, ``write_model``) needs torch and is
imported from its module, so that reading a contract never loads torch.
"""

from pipeline.export.contract import CONTRACT_FILE, ONNX_FILE, Contract, ContractError, load_contract

__all__ = ["CONTRACT_FILE", "ONNX_FILE", "Contract", "ContractError", "load_contract"]
