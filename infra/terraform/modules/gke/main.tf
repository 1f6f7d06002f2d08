# GKE for chameleon_jax: a private cluster with workload identity and the
# Cloud Storage FUSE CSI driver, a CPU pool, GPU pools (driver installed by
# GKE, nvidia.com/gpu taint), TPU slices (COMPACT placement, one pool per
# slice), one bucket (data/, workdirs/, models/), a Docker registry, and the
# training / serving service accounts that the rendered manifests use.

locals {
  workload_accounts = {
    train = var.train_service_account
    serve = var.serve_service_account
  }
  # What each account may do with the bucket: training writes checkpoints,
  # datasets and exports; serving only reads models.
  bucket_roles = {
    train = "roles/storage.objectUser"
    serve = "roles/storage.objectViewer"
  }
}

resource "google_service_account" "nodes" {
  project      = var.project
  account_id   = "${var.cluster_name}-nodes"
  display_name = "GKE nodes of ${var.cluster_name}"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/artifactregistry.reader",
  ])
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "main" {
  project  = var.project
  name     = var.cluster_name
  location = var.region

  node_locations           = var.zones
  network                  = var.network
  subnetwork               = var.subnetwork
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = true

  release_channel {
    channel = "REGULAR"
  }

  workload_identity_config {
    workload_pool = "${var.project}.svc.id.goog"
  }

  private_cluster_config {
    enable_private_nodes    = var.enable_private_nodes
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        display_name = cidr_blocks.key
        cidr_block   = cidr_blocks.value
      }
    }
  }

  ip_allocation_policy {}

  addons_config {
    gcs_fuse_csi_driver_config {
      enabled = true
    }
  }

  network_policy {
    enabled = true
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  resource_labels = {
    app = "chameleon"
  }

  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "cpu" {
  project  = var.project
  name     = "cpu"
  cluster  = google_container_cluster.main.id
  location = var.region

  autoscaling {
    min_node_count = var.cpu_pool.min_nodes
    max_node_count = var.cpu_pool.max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_pool.machine_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "gpu" {
  for_each = var.gpu_pools
  project  = var.project
  name     = each.key
  cluster  = google_container_cluster.main.id
  location = var.region

  autoscaling {
    min_node_count = each.value.min_nodes
    max_node_count = each.value.max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    guest_accelerator {
      type  = each.value.accelerator
      count = each.value.count
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    # Only pods that tolerate it (the rendered JobSets and serving on GPU)
    # land on GPU nodes.
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "tpu" {
  for_each   = var.tpu_pools
  project    = var.project
  name       = each.key
  cluster    = google_container_cluster.main.id
  location   = var.region
  node_count = each.value.node_count

  # A multi-host slice: all hosts in one placement group of this topology
  # (the rendered JobSet selects it with cloud.google.com/gke-tpu-topology).
  placement_policy {
    type         = "COMPACT"
    tpu_topology = each.value.topology
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_storage_bucket" "main" {
  project                     = var.project
  name                        = var.bucket_name
  location                    = var.bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Models and datasets are versioned by path; object versioning keeps what
  # an accidental overwrite or delete removed.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_artifact_registry_repository" "main" {
  project       = var.project
  location      = var.registry_location
  repository_id = var.registry_id
  format        = "DOCKER"
  description   = "chameleon_jax train and publish images"
}

resource "google_service_account" "workload" {
  for_each     = local.workload_accounts
  project      = var.project
  account_id   = each.value
  display_name = "chameleon ${each.key} (Kubernetes ${var.namespace}/${each.value})"
}

# Workload identity: the Kubernetes service account NAMESPACE/NAME acts as
# the Google service account of the same name (the rendered manifests carry
# the matching iam.gke.io/gcp-service-account annotation).
resource "google_service_account_iam_member" "workload_identity" {
  for_each           = local.workload_accounts
  service_account_id = google_service_account.workload[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/${each.value}]"
}

resource "google_storage_bucket_iam_member" "workload" {
  for_each = local.workload_accounts
  bucket   = google_storage_bucket.main.name
  role     = local.bucket_roles[each.key]
  member   = "serviceAccount:${google_service_account.workload[each.key].email}"
}
