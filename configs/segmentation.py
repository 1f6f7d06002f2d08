"""Template for segmentation experiments. Every knob, with where it acts.

Experiments in `experiments/` start from `get_config()` and override. On the
command line: `--config=experiments/x.py --config.train.steps=500`; unknown
keys are refused. Component defaults that are not set here (e.g. a UNet's
norm groups, a loss's smoothing) are gin-bindable: `config.gin_bindings =
["models.unet.norm_groups = 4"]` or `config.gin_files = ["configs/x.gin"]`.
A value given here always wins over a gin binding.
"""

import ml_collections
from ml_collections.config_dict import placeholder as _unset

from chameleon_jax.data import catalog
from chameleon_jax.data import images as imio


def get_config() -> ml_collections.ConfigDict:
  """The template: every key, documented; experiments change what they
  choose differently."""
  config = ml_collections.ConfigDict()
  # segmentation (masks -> per-pixel logits) | classification (class-by-
  # folder labels -> per-image logits; model "classifier").
  config.task = "segmentation"
  config.seed = 0
  config.gin_files = []
  config.gin_bindings = []

  # --- ETL (--mode=ingest) and input pipeline -------------------------------
  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # Where dataset versions live; "" = <workdir>/data.
  config.data.name = "dataset"
  config.data.version = ""  # "" = the LATEST version of data.name.
  config.data.source = "synthetic"  # A DATASETS registry name.
  # The source's options: every option of every registered source, unset
  # (None: the source's default); set the ones the source takes, e.g.
  # --config.data.source_kwargs.root=/data. One the source does not take is
  # refused at ingest with the ones it does (README, "Sources and their
  # options"; chameleon_jax/data/catalog.py).
  config.data.source_kwargs = ml_collections.ConfigDict(
      {option: _unset(entry["type"])
       for option, entry in catalog.options().items()})
  config.data.splits = ml_collections.ConfigDict(
      {"train": 0.7, "val": 0.15, "test": 0.15})
  config.data.split_seed = 0
  # k-fold: >= 2 splits train+val into k folds at ingest ("test" stays held
  # out); `fold` picks the validation fold when training/evaluating.
  config.data.folds = 0
  config.data.fold = 0
  # Items whose ids share this regex's group 1 (e.g. r"^(part\d+)_") stay in
  # one split (same part / patient); "" = no groups. Duplicates always do.
  config.data.group_pattern = ""
  # Keep the dataset's own split: a regex on item ids whose group 1 names it
  # (train/training, val/validation, test/testing), e.g. r"^(\w+)/" for
  # images/training/... and images/test/... with source_kwargs.recursive.
  # Named test (val) items stay there with their duplicates; the rest are
  # split over the other splits. "" = split everything by data.splits.
  config.data.split_pattern = ""
  config.data.near_duplicate_bits = 4  # pHash distance of near duplicates.
  config.data.max_bad_fraction = 0.05  # Ingest fails above this share.
  # Largest image (H x W pixels) ingest and predict decode; a larger one is
  # refused from its header (quarantined at ingest). data/images.py.
  config.data.max_pixels = imio.MAX_PIXELS
  config.data.scale = 1.0  # Resampling factor for every image, first.
  config.data.image_size = (96, 96)  # (H, W) for eval; () = native (train).
  # resize | pad | crop (transforms.py); "" = the task's own, the way its
  # served model sees an image: pad (segmentation: edge-padded at the bottom
  # and right, as predict and the SavedModel pad) or resize (classification).
  config.data.size_policy = ""
  config.data.crop_size = ()  # Training crop (H, W); () = whole image.
  config.data.num_workers = 0  # Grain worker processes.
  # Share of every batch drawn from images with a defect (exact per batch);
  # -1 = sample images uniformly. Real data is ~70% defect-free.
  config.data.defect_image_fraction = -1.0
  # With a share set: draw the defect images from each defect class in turn
  # (data/pipeline.py), so a rare class is seen as often as a common one.
  # Off: on magnetic tile it lowered val (seed 0; benchmarks/RESULTS.md).
  config.data.defect_class_balance = False
  # Training augmentation: a preset from data/augment.py (default | none |
  # geometric | photometric | industrial | medical; gin-rebindable), then any
  # key below that is set (not None) overrides the preset's value.
  config.data.augment_preset = "default"
  config.data.augment = ml_collections.ConfigDict({
      "foreground_crop_fraction": _unset(float),  # Share of crops on a defect.
      "crop_scale": _unset(tuple),  # (min, max) random resized crop.
      "flip": _unset(bool),
      "rotate90": _unset(bool),
      "rotate": _unset(float),  # degrees
      "elastic_alpha": _unset(float),  # pixels
      "elastic_sigma": _unset(float),
      "elastic_p": _unset(float),
      "gamma": _unset(tuple),  # (min, max)
      "brightness": _unset(float),
      "contrast": _unset(float),
      "blur_sigma": _unset(float),
      "blur_p": _unset(float),
      "noise_std": _unset(float),
  })

  # --- Planning (--mode=plan; chameleon_jax/planning/) --------------------------
  # The planner reads the dataset's fingerprint, this machine and
  # train.time_budget_minutes (0: 25 min) and writes <workdir>/plan/config.py
  # with plan.md (the rule and evidence behind every value). Keys given as
  # --config.key=value overrides are kept and recorded as the user's choice.
  config.plan = ml_collections.ConfigDict()
  # "" = measure this machine (a few seconds); the path of a machine.json a
  # plan wrote = plan for that machine again (a byte-identical plan).
  config.plan.machine_profile = ""

  # --- Sweeps (--mode=sweep; chameleon_jax/sweeps/) ----------------------------
  # The experiment file's get_sweep() (a Space: grid, ranges, replicates) run
  # as processes on this machine; rerunning the same command resumes it.
  config.sweep = ml_collections.ConfigDict()
  config.sweep.parallel = 1  # Trials at a time on this machine.
  # The Optuna study's database: "" = SQLite in <workdir>/sweep/study.db; a
  # postgresql://user:password@host:5432/db URL for workers on several
  # machines (--mode=render --sweep passes it to every worker pod).
  config.sweep.storage = ""
  config.sweep.metric = ""  # Validation metric maximised; "" = train.best_metric.
  # A worker silent for 3 heartbeats is dead: its trial runs again, resuming.
  config.sweep.heartbeat_seconds = 10

  # --- Model and loss (registry names + their options) ----------------------
  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"
  config.model.dtype = "float32"  # Compute dtype; "bfloat16" for mixed.
  # The architecture's options; unset ones take the code's defaults (the
  # builder's docstring: `python main.py --mode=zoo`, models/), which a gin
  # binding can change (models.unet.widths = ...). Any other option of the
  # architecture can be given too (config.model.kwargs = {...}).
  config.model.kwargs = ml_collections.ConfigDict({
      "encoder": _unset(str),  # None: the plain UNet (architecture "unet").
      "widths": _unset(tuple),  # Plain UNet: channels per level.
      "norm": _unset(str),  # group | batch | none
      "norm_groups": _unset(int),
  })
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "dice_ce"
  config.loss.kwargs = ml_collections.ConfigDict()

  # --- Optimisation ----------------------------------------------------------
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # Global, over all devices and processes.
  config.train.steps = 1000
  # A wall-clock budget in minutes, compilation and validations included
  # (0 = none): the loop measures this machine and trains min(steps, what
  # fits), validating budget_evals times, evenly spaced, or fewer (at least
  # the last) where they would take more than budget_eval_share of the
  # budget (train/budget.py; the plan is saved as <workdir>/budget.json).
  # At the end of warmup the run's own pace (its second half) is checked,
  # and the plan shortened where it would overrun (it needs 10 steps to
  # time: warmup_steps >= 19).
  config.train.time_budget_minutes = 0.0
  config.train.budget_evals = 3
  config.train.budget_eval_share = 0.1
  # Steps are planned at (1 + margin) x the timed step (train/budget.py).
  config.train.budget_margin = 0.05
  config.train.budget_calibration_steps = 10  # Timed steps, after the first.
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 50
  config.train.weight_decay = 1e-4
  config.train.grad_clip_norm = 1.0  # 0 = no clipping.
  config.train.ema_decay = 0.0  # 0 = no EMA; e.g. 0.99 evaluates the EMA.
  config.train.log_every = 20
  config.train.eval_every = 250  # Validation every N steps; 0 = at the end only.
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 2
  # The validation metric that picks the `best` checkpoint ("" = none). With
  # eval.decision="calibrated", "calibrated/score" selects by the figure
  # --mode=eval reports: the val Dice of the rule chosen within the budget.
  config.train.best_metric = "mean_defect_iou"
  # Stop after this step, validated and checkpointed, with the schedule of
  # all train.steps (0 = train to the end): a sweep's successive-halving
  # rungs; a later run with a larger value (or 0) resumes from here.
  config.train.stop_at = 0

  # --- Evaluation and prediction ---------------------------------------------
  config.eval = ml_collections.ConfigDict()
  config.eval.split = "test"
  config.eval.batch_size = 16
  config.eval.min_defect_area = 1  # Predicted pixels that raise an alarm.
  # Image-level decisions (evaluation/decision.py): "argmax" = the mask as
  # predicted; "calibrated" = a threshold on p(defect) and a minimum
  # component area chosen on the validation split (best defect-image Dice
  # with false alarms <= max_false_alarm), then applied to eval.split.
  config.eval.decision = "argmax"
  config.eval.max_false_alarm = 0.1
  # With "calibrated": the seed threshold and minimum area per predicted
  # defect class (a component's class), chosen on val from the shared rule.
  config.eval.per_class_rule = False
  config.eval.flip_tta = False  # Mean over 4 flips (segmentation).
  config.eval.checkpoint = "best"  # best | latest
  config.eval.num_worst = 8  # Overlays written for the worst images.
  config.predict = ml_collections.ConfigDict()
  config.predict.input_dir = ""
  config.predict.output_dir = ""  # "" = <workdir>/predictions.
  # Sliding-window inference for large images: (H, W) window, usually the
  # training crop; () = the whole image at once. Windows overlap by
  # `overlap` and are blended with Gaussian weights.
  config.predict.window = ()
  config.predict.overlap = 0.5

  # --- Labelling tool (--mode=label; chameleon_jax/labelling/) -----------------
  # A local page to draw and correct masks over data.source_kwargs.root
  # (image_mask_folders layout; masks written where ingest reads them).
  config.label = ml_collections.ConfigDict()
  # 127.0.0.1: this machine only. "0.0.0.0" serves every network (anyone who
  # can reach the port and read the page's token can write masks).
  config.label.host = "127.0.0.1"
  config.label.port = 8765
  # Pre-labels from the workdir's model (eval.checkpoint, and eval.decision's
  # rule): auto = when the workdir holds a trained model | on | off.
  config.label.prelabel = "auto"
  config.label.max_request_mb = 16.0  # Larger request bodies are refused.

  # --- Export to TF Serving (--mode=export; export/) ---------------------------
  config.export = ml_collections.ConfigDict()
  config.export.model_name = ""  # "" = data.name.
  config.export.model_base_path = ""  # "" = <workdir>/serving.
  config.export.checkpoint = "best"  # best | latest
  # XlaCallModule platforms compiled into the SavedModel ("tpu" on request).
  config.export.platforms = ("cpu", "cuda")
  # Input buckets (H, W), multiples of the model stride: a request of any
  # size up to the largest is edge-padded to the smallest bucket that holds
  # it, so the server compiles one program per bucket and batch size.
  # () = (data.image_size,), the evaluation canvas. Every bucket must hold
  # data.image_size, so that an image evaluated on that canvas is served on
  # it too (segmentation; components/build.canvases).
  config.export.buckets = ()
  # Warmup requests per bucket; () = every batch size the server pads to
  # (export/server_flags.ALLOWED_BATCH_SIZES): nothing compiles under load.
  config.export.warmup_batch_sizes = ()
  config.export.input_dtype = "uint8"  # uint8 | uint16 | float32 ([0, 1]).
  config.export.top_k = 3  # Classification: classes returned per image.
  config.export.version_label = "canary"  # Label of the new version.
  # Validation images served into the version's monitoring reference
  # (assets.extra/monitoring/reference.json; 0 = none): the windows of the
  # request log are tested against it (chameleon_jax/monitoring/). A few
  # hundred give the two-sample tests their power; more cost export time.
  config.export.reference_images = 256

  # --- Regression gate (--mode=gate; chameleon_jax/governance/gate.py) ---------
  # The workdir's evaluated model against the champion on eval.split, paired
  # over images; blessed only if no check fails (the gate's docstring).
  config.gate = ml_collections.ConfigDict()
  config.gate.champion = ""  # A workdir; "" = the `stable` export version.
  config.gate.first_deploy = False  # Bless without a champion (once).
  config.gate.epsilon = 0.02  # Regression tolerated (Dice, found share).
  config.gate.alpha = 0.05  # Interval and (Holm-corrected) test level.
  config.gate.resamples = 2000  # Paired bootstrap resamples (>= 2000).
  config.gate.seed = 0
  # The candidate's false-alarm rate on the split: the 20 % target that
  # defect_alarm's 15 % on val leaves room under.
  config.gate.max_false_alarm = 0.2

  # --- Model card (chameleon_jax/governance/model_card.py) ---------------------
  # Written with every exported version (assets.extra/model_card/), refreshed
  # by --mode=gate and --mode=card. What only a person can write (owner,
  # intended_use, out_of_scope_uses, known_limitations) comes from a YAML
  # kept with the experiment; while any is missing, `stable` cannot be
  # assigned to the version (training and export still run).
  config.card = ml_collections.ConfigDict()
  # The YAML's path (relative to the working directory); "" = none yet, so
  # no version of this experiment can become stable.
  config.card.human = ""

  # --- Robustness (--mode=robustness; chameleon_jax/robustness/) --------------
  config.robustness = ml_collections.ConfigDict()
  config.robustness.split = "test"
  # Images evaluated (half with defects); 0 = the whole split. Every condition
  # costs one forward pass per member over them (PGD-k: ~3k more).
  config.robustness.max_images = 64
  config.robustness.batch_size = 16
  # Images per attack call (divides batch_size): PGD-k holds k steps of
  # activations per image and member (~0.26 GB each for PGD-10 at 208x320).
  config.robustness.attack_batch_size = 2
  config.robustness.seed = 0  # Perturbations depend on (seed, condition, image).
  # Workdirs of further ensemble members (--workdir is member 0); their model
  # cards give their architectures.
  config.robustness.members = ()
  config.robustness.ensemble_method = "probs"  # logits | probs | vote
  # Names, groups (noise, blur, weather, digital, extra, real_world) or
  # aliases: all | imagenet_c (15 + 4 extras) | imagenet_c_core (15).
  config.robustness.corruptions = ("all",)
  config.robustness.severities = (1, 2, 3, 4, 5)
  config.robustness.corruption_scale = "auto"  # auto | 224 | 32 (param sets)
  config.robustness.attacks = ("fgsm", "pgd")  # ATTACKS registry names
  config.robustness.attack_kwargs = ml_collections.ConfigDict(
      {"pgd": {"steps": 10, "alpha_ratio": 0.25, "random_start": True}})
  config.robustness.epsilons = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
  # untargeted: raise the loss on the true mask; defects_to_background:
  # targeted, make every defect pixel background (the QC-relevant attack).
  config.robustness.attack_goal = "untargeted"
  # What an ensemble attack differentiates: combined | member_sum (ART).
  config.robustness.attack_gradient = "combined"
  config.robustness.transfer_from = 0  # Member crafting transfer attacks; -1 none.
  config.robustness.num_examples = 3  # Images in the example grids.
  # Another dataset of the same domain (generalisation); name "" = none.
  config.robustness.other_data = ml_collections.ConfigDict(
      {"name": "", "version": "", "root": "", "split": "test"})

  # --- Cluster (--mode=render --target=gke-gpu|gke-tpu|cpu; infra/) ----------
  # Kubernetes manifests rendered from this config: a JobSet for training
  # (one pod per host, process id = Job completion index, coordinator = pod
  # 0 through the JobSet's headless service) and the TF Serving Deployment
  # with its ConfigMaps, Service, PDB and HPA. Names must be DNS labels.
  config.deploy = ml_collections.ConfigDict()
  config.deploy.name = ""  # JobSet / Deployment name; "" = data.name.
  config.deploy.namespace = "chameleon"
  config.deploy.project = "my-project"  # GCP project (workload identity).
  # Artifact Registry repository of the train image (infra/docker/).
  config.deploy.registry = "us-docker.pkg.dev/my-project/chameleon"
  config.deploy.image_tag = "0.1.0"
  # GKE: one bucket, mounted with the Cloud Storage FUSE CSI driver: data/
  # (dataset versions, read-only), workdirs/ (Orbax checkpoints), models/
  # (the TF Serving base path). cpu target: a ReadWriteMany claim instead.
  config.deploy.bucket = "my-project-chameleon"
  config.deploy.volume_claim = "chameleon-shared"
  config.deploy.hosts = 1  # Training pods (processes); TPU: chips / chips per host.
  config.deploy.max_restarts = 3  # JobSet restarts; each resumes from the checkpoint.
  config.deploy.cpu = 8  # Requested per training pod (gke-gpu/cpu targets).
  config.deploy.memory_gi = 32
  config.deploy.gpu_type = "nvidia-l4"  # cloud.google.com/gke-accelerator
  config.deploy.gpus_per_host = 1
  config.deploy.tpu_type = "tpu-v5-lite-podslice"  # gke-tpu-accelerator
  config.deploy.tpu_topology = "2x4"  # gke-tpu-topology (chips x chips)
  config.deploy.tpu_chips_per_host = 4  # ct5lp-hightpu-4t
  config.deploy.train_service_account = "chameleon-train"
  config.deploy.serve_service_account = "chameleon-serve"
  # TF Serving: the official image, pinned; its TF must read the
  # XlaCallModule version that this JAX writes (10 for jax 0.10.2).
  config.deploy.serving_version = "2.21.0"
  config.deploy.serving_replicas = (2, 6)  # (min, max) for the HPA.
  config.deploy.serving_cpu_target = 70  # HPA: average CPU utilisation %.
  config.deploy.serving_gpus = 1  # Per replica on gke-gpu; 0 elsewhere.

  # --- Multi-process (jax.distributed); None = from the environment ----------
  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ""
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  return config
