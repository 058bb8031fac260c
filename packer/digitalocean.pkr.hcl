# Bakes a bakery server into a DigitalOcean snapshot.
# Non-secret settings come from bakery.auto.pkrvars.hcl; the API token only from
# the DIGITALOCEAN_API_TOKEN environment variable.
# Packer logs in as the admin user that the user-data creates (ssh_username), with
# the SSH key of bakery.yaml: from ssh_private_key_file, or from the running
# ssh-agent when that is empty. The provider's key injection is not used, because
# bakery's user-data defines its own users and keeps root out.

variable "api_token" {
  type      = string
  default   = env("DIGITALOCEAN_API_TOKEN")
  sensitive = true
  validation {
    condition     = length(var.api_token) > 0
    error_message = "Set the DIGITALOCEAN_API_TOKEN environment variable to a DigitalOcean API token."
  }
}

variable "image_name" {
  type    = string
  default = "bakery"
}

variable "region" {
  type    = string
  default = "nyc3"
}

variable "size" {
  type    = string
  default = "s-1vcpu-1gb"
}

variable "image" {
  type    = string
  default = "ubuntu-24-04-x64"
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
  # Snapshot names must be unique per build: suffix a UTC timestamp.
  stamp = regex_replace(timestamp(), "[- TZ:]", "")
}

source "digitalocean" "bakery" {
  api_token            = var.api_token
  image                = var.image
  region               = var.region
  size                 = var.size
  snapshot_name        = "${var.image_name}-${local.stamp}"
  droplet_name         = "${var.image_name}-bake-${local.stamp}"
  user_data_file       = "${path.root}/user-data"
  ssh_username         = var.ssh_username
  ssh_port             = var.ssh_port
  ssh_timeout          = "15m"
  ssh_private_key_file = var.ssh_private_key_file == "" ? null : var.ssh_private_key_file
  ssh_agent_auth       = var.ssh_private_key_file == ""
}

build {
  sources = ["source.digitalocean.bakery"]

  provisioner "shell" {
    script = "${path.root}/scripts/wait-for-cloud-init.sh"
  }

  provisioner "shell" {
    environment_vars = ["PACKER_SSH_PUBLIC_KEY=${build.SSHPublicKey}"]
    script           = "${path.root}/scripts/clean-image.sh"
  }
}
