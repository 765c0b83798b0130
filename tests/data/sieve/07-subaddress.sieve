require ["fileinto", "subaddress"];
if address :detail "from" "lists" { fileinto "Lists"; }
if address :user "from" "sender" { fileinto "Users"; }
