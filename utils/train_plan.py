"""TrainPlan: everything train_ssd_network.check_flags resolves from the flags and the dataset before a
graph is built (the training flags themselves stay in the FlagValues)."""
import dataclasses
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """Resolved training settings. Frozen: a cluster worker's deployment, known only once it has joined
    the cluster, is set with dataclasses.replace."""
    net: Any                    # the nets_factory network (num_classes after --labels_offset)
    data_format: str            # 'NHWC' or 'NCHW', the layout the network runs in
    model_config: dict          # saved as train_dir/model_config.json once the graph is built
    dataset_dir: str            # folder of the TFRecords and dataset_info.json
    split_name: str             # the split trained on
    info: Any                   # datasets.dataset_info.DatasetInfo of dataset_dir
    shards: list                # the split's TFRecord paths
    num_samples: int            # records in the split (samples per epoch)
    preprocess_fn: Any          # preprocessing_factory training function
    schedule: Any               # learning_schedules.ScheduleConfig
    optimizer: Any              # learning_schedules.OptimizerConfig
    decay_steps: int            # global steps in --num_epochs_per_decay epochs
    resume_from: Optional[str]  # train_dir checkpoint to resume (chief only), else None
    pretrained: Optional[str]   # checkpoint to fine-tune from when there is nothing to resume, else None
    use_gpus: bool              # clones on GPUs (else on logical CPU devices)
    deployment: Any = None      # clones.Deployment; None for a cluster worker until it joins
    ps_hosts: tuple = ()        # cluster: parameter servers (empty: one process)
    worker_hosts: tuple = ()    # cluster: workers, worker 0 the chief
    sync_replicas: int = 0      # gradients aggregated per global step with --sync_replicas (0: async)

    @property
    def in_cluster(self):
        return bool(self.worker_hosts)
