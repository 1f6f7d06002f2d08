# The cluster that `python main.py --config=experiments/magnetic_tile.py
# --mode=render --target=gke-gpu|gke-tpu` renders for, with the defaults of
# config.deploy (configs/segmentation.py): tests/test_terraform.py checks
# that the two agree.
#
#   terraform init && terraform apply -var project=my-project

variable "project" {
  type    = string
  default = "my-project"
}

module "chameleon" {
  source = "../../modules/gke"

  project      = var.project
  region       = "us-central1"
  zones        = ["us-central1-a"]
  cluster_name = "chameleon"

  gpu_pools = {
    l4 = {
      machine_type = "g2-standard-8"
      accelerator  = "nvidia-l4"
      count        = 1
      min_nodes    = 0
      max_nodes    = 4
    }
  }

  tpu_pools = {
    v5e-2x4 = {
      machine_type = "ct5lp-hightpu-4t"
      topology     = "2x4"
      node_count   = 2
    }
  }

  bucket_name       = "${var.project}-chameleon"
  registry_location = "us"
  registry_id       = "chameleon"

  namespace             = "chameleon"
  train_service_account = "chameleon-train"
  serve_service_account = "chameleon-serve"
}

output "registry" {
  value = module.chameleon.registry
}

output "bucket" {
  value = module.chameleon.bucket
}
