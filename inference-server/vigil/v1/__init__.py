"""vigil.v1: the AnomalyDetection gRPC API (anomaly_pb2, anomaly_pb2_grpc)."""
