# Bakes a bakery server into a Hetzner Cloud snapshot.
# Non-secret settings come from bakery.auto.pkrvars.hcl; the API token only from
# the HCLOUD_TOKEN environment variable.
# Packer logs in as the admin user that the user-data creates (ssh_username), with
# the SSH key of bakery.yaml: from ssh_private_key_file, or from the running
# ssh-agent when that is empty. The provider's key injection is not used, because
# bakery's user-data defines its own users and keeps root out.

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
  type = string
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "ssh_private_key_file" {
  type    = string
  default = ""
}

locals {
  stamp = regex_replace(timestamp(), "[- TZ:]", "")
}

source "hcloud" "bakery" {
  token                = var.hcloud_token
  image                = var.image
  location             = var.location
  server_type          = var.server_type
  server_name          = "${var.image_name}-bake-${local.stamp}"
  snapshot_name        = "${var.image_name}-${local.stamp}"
  user_data_file       = "${path.root}/user-data"
  ssh_username         = var.ssh_username
  ssh_port             = var.ssh_port
  ssh_timeout          = "15m"
  ssh_private_key_file = var.ssh_private_key_file == "" ? null : var.ssh_private_key_file
  ssh_agent_auth       = var.ssh_private_key_file == ""

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
