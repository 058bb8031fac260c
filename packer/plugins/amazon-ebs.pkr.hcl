# Modern Packer (1.7 and later) installs the amazon plugin with `packer init .`.
# Kept apart from the template because Packer 1.6.6, whose builders are built in,
# cannot parse this block.
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.0.0"
    }
  }
}
