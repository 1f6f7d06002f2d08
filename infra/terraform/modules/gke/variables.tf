variable "project" {
  description = "GCP project id (config.deploy.project)."
  type        = string
}

variable "region" {
  description = "Region of the cluster, the bucket's default and the registry."
  type        = string
  default     = "us-central1"
}

variable "zones" {
  description = "Zones of the node pools (accelerators exist only in some zones)."
  type        = list(string)
  default     = ["us-central1-a"]
}

variable "cluster_name" {
  type    = string
  default = "chameleon"
}

variable "network" {
  description = "VPC network self link or name."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  type    = string
  default = "default"
}

variable "enable_private_nodes" {
  description = "Nodes without public IPs (egress through Cloud NAT). Set false only on purpose."
  type        = bool
  default     = true
}

variable "master_ipv4_cidr_block" {
  description = "The control plane's /28 when nodes are private."
  type        = string
  default     = "172.16.0.32/28"
}

variable "master_authorized_cidrs" {
  description = "CIDRs allowed to reach the control plane (CI runners, VPN)."
  type        = map(string)
  default     = {}
}

variable "cpu_pool" {
  description = "Default pool: ingest, export, serving on CPU, system pods."
  type = object({
    machine_type = string
    min_nodes    = number
    max_nodes    = number
  })
  default = { machine_type = "e2-standard-8", min_nodes = 1, max_nodes = 4 }
}

variable "gpu_pools" {
  description = "GPU pools by name; accelerator is the gke-accelerator label (config.deploy.gpu_type)."
  type = map(object({
    machine_type = string
    accelerator  = string
    count        = number
    min_nodes    = number
    max_nodes    = number
    spot         = optional(bool, false)
  }))
  default = {}
}

variable "tpu_pools" {
  description = "TPU slices by name; one pool = one slice of topology (config.deploy.tpu_topology), node_count hosts."
  type = map(object({
    machine_type = string
    topology     = string
    node_count   = number
    spot         = optional(bool, false)
  }))
  default = {}
}

variable "bucket_name" {
  description = "Bucket for data/, workdirs/ and models/ (config.deploy.bucket)."
  type        = string
}

variable "bucket_location" {
  type    = string
  default = "US-CENTRAL1"
}

variable "registry_location" {
  description = "Artifact Registry location (the host of config.deploy.registry, e.g. us for us-docker.pkg.dev)."
  type        = string
  default     = "us"
}

variable "registry_id" {
  type    = string
  default = "chameleon"
}

variable "namespace" {
  description = "Kubernetes namespace of the workloads (config.deploy.namespace)."
  type        = string
  default     = "chameleon"
}

variable "train_service_account" {
  description = "Kubernetes and Google service account name for training (config.deploy.train_service_account)."
  type        = string
  default     = "chameleon-train"
}

variable "serve_service_account" {
  description = "Kubernetes and Google service account name for serving (config.deploy.serve_service_account)."
  type        = string
  default     = "chameleon-serve"
}
