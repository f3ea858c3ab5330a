"""Export to portable formats: ONNX (standard ops + the ai.mho.memristor domain) and CoreML."""
