"""busjax TFDS builders. ``import tfds_builders`` registers every dataset, so
``tfds.data_source("busbra", data_dir=...)`` works from any project."""
from tfds_builders.breast_lesions_usg import breast_lesions_usg_dataset_builder as _breast_lesions_usg  # noqa: F401,E501
from tfds_builders.bus_uclm import bus_uclm_dataset_builder as _bus_uclm  # noqa: F401
from tfds_builders.busbra import busbra_dataset_builder as _busbra  # noqa: F401
from tfds_builders.busi import busi_dataset_builder as _busi  # noqa: F401
from tfds_builders.busis import busis_dataset_builder as _busis  # noqa: F401
from tfds_builders.stu_hospital import stu_hospital_dataset_builder as _stu_hospital  # noqa: F401
from tfds_builders.synthetic_bus import synthetic_bus_dataset_builder as _synthetic_bus  # noqa: F401
from tfds_builders.udiat_b import udiat_b_dataset_builder as _udiat_b  # noqa: F401

DATASETS = ("breast_lesions_usg", "bus_uclm", "busbra", "busi", "busis", "stu_hospital",
            "synthetic_bus", "udiat_b")
