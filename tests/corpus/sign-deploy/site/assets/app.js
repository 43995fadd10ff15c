document.getElementById('status').dataset.checkedAt = new Date().toISOString();
