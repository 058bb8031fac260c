# Bakes a bakery server into a Hetzner Cloud snapshot.
# Non-secret settings come from bakery.auto.pkrvars.hcl; the API token only from
# the HCLOUD_TOKEN environment variable.

variable "hcloud_token" {
  type      = string
  default   = env("HCLOUD_TOKEN")
  sensitive = true
  validation {
    condition     = length(var.hcloud_token) > 0
    error_message = "Set the HCLOUD_TOKEN environment variable to a Hetzner Cloud API token."
  }
}

variable "image_name" {
  type    = string
  default = "bakery"
}

variable "location" {
  type    = string
  default = "fsn1"
}

variable "server_type" {
  type    = string
  default = "cx22"
}

variable "image" {
  type    = string
  default = "ubuntu-24.04"
}

variable "ssh_username" {
  type    = string
  default = "root"
}

variable "ssh_port" {
  type    = number
  default = 22
}

locals {
  stamp = regex_replace(timestamp(), "[- TZ:]", "")
}

source "hcloud" "bakery" {
  token          = var.hcloud_token
  image          = var.image
  location       = var.location
  server_type    = var.server_type
  server_name    = "${var.image_name}-bake-${local.stamp}"
  snapshot_name  = "${var.image_name}-${local.stamp}"
  user_data_file = "${path.root}/user-data"
  ssh_username   = var.ssh_username
  ssh_port       = var.ssh_port
  ssh_timeout    = "15m"

  snapshot_labels = {
    builder = "bakery"
    name    = var.image_name
  }
}

build {
  sources = ["source.hcloud.bakery"]

  provisioner "shell" {
    script = "${path.root}/scripts/wait-for-cloud-init.sh"
  }

  provisioner "shell" {
    environment_vars = ["PACKER_SSH_PUBLIC_KEY=${build.SSHPublicKey}"]
    script           = "${path.root}/scripts/clean-image.sh"
  }
}
