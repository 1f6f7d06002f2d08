output "cluster_name" {
  value = google_container_cluster.main.name
}

output "cluster_endpoint" {
  value     = google_container_cluster.main.endpoint
  sensitive = true
}

output "bucket" {
  description = "config.deploy.bucket"
  value       = google_storage_bucket.main.name
}

output "registry" {
  description = "config.deploy.registry"
  value       = "${var.registry_location}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.main.repository_id}"
}

output "service_accounts" {
  description = "Google service accounts bound to the Kubernetes ones (workload identity)."
  value       = { for k, sa in google_service_account.workload : k => sa.email }
}
