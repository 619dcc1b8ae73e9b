"""The file MLflow loads as the cascade's pyfunc model (models-from-code, see unclip/serving.py)."""

from mlflow.models import set_model

from unclip.serving import PipelineModel

set_model(PipelineModel())
