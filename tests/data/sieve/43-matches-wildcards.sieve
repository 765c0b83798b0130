require ["fileinto", "variables"];
if header :matches "from" "*<*@*>" { fileinto "${2}-at-${3}"; }
