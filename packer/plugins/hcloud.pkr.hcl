# Modern Packer (1.7 and later) installs the hcloud plugin with `packer init .`.
# Kept apart from the template because Packer 1.6.6, whose builders are built in,
# cannot parse this block.
packer {
  required_plugins {
    hcloud = {
      source  = "github.com/hetznercloud/hcloud"
      version = ">= 1.0.0"
    }
  }
}
